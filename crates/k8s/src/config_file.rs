//! What the two configuration files (`node.yaml` and kube-proxy's
//! `KubeProxyConfiguration`) share: their error, the size and syntax checks,
//! and reading a typed document while naming the field of a failure.

use serde::de::{DeserializeOwned, IgnoredAny};

use crate::yaml::{self, MAX_INPUT_BYTES};

/// A configuration file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigFileError {
    /// Not YAML (or JSON). `line`/`column` are 1-based (0 when unknown).
    #[error("{file}:{line}:{column}: {message}")]
    Syntax {
        /// The name the caller gave the input (`node.yaml`, the `--config` path).
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// An unknown key, a value of the wrong type, an invalid value or
    /// contradictory settings.
    #[error("{file}: {}{message}", if field.is_empty() { String::new() } else { format!("{field}: ") })]
    Invalid {
        /// The name the caller gave the input.
        file: String,
        /// The key path (`iptables.syncPeriod`); empty for the whole file.
        field: String,
        /// What is wrong, quoting the value.
        message: String,
    },
    /// Larger than [`MAX_INPUT_BYTES`].
    #[error("{file}: {size} bytes is more than the limit of {limit} bytes")]
    TooLarge {
        /// The name the caller gave the input.
        file: String,
        /// Its size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
}

/// (field path, message) of an invalid value, before the file is named.
pub(crate) type Invalid = (String, String);

pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Invalid {
    (field.into(), message.into())
}

/// Names the file of an [`Invalid`].
pub(crate) fn in_file(file: &str) -> impl Fn(Invalid) -> ConfigFileError + '_ {
    move |(field, message)| ConfigFileError::Invalid {
        file: file.to_owned(),
        field,
        message,
    }
}

/// Size and syntax first, so that a later error is always about a field or
/// a value.
pub(crate) fn check_size_and_syntax(text: &str, file: &str) -> Result<(), ConfigFileError> {
    if text.len() > MAX_INPUT_BYTES {
        return Err(ConfigFileError::TooLarge {
            file: file.to_owned(),
            size: text.len(),
            limit: MAX_INPUT_BYTES,
        });
    }
    if let Err(err) = serde_saphyr::from_str_with_options::<IgnoredAny>(text, yaml::options()) {
        let (line, column, mut message) = yaml::describe(&err);
        if matches!(err, serde_saphyr::Error::MultipleDocuments { .. }) {
            message = "more than one YAML document".to_owned();
        }
        return Err(ConfigFileError::Syntax {
            file: file.to_owned(),
            line,
            column,
            message,
        });
    }
    Ok(())
}

/// Deserializes the whole document (`None` when empty), naming the field of a
/// failure.
pub(crate) fn read_document<T: DeserializeOwned>(text: &str) -> Result<Option<T>, Invalid> {
    let mut path = String::new();
    let parsed = serde_saphyr::with_deserializer_from_str_with_options(text, yaml::options(), |de| {
        serde_path_to_error::deserialize::<_, Option<T>>(de).map_err(|err| {
            path = err.path().to_string();
            err.into_inner()
        })
    });
    parsed.map_err(|err| {
        let (line, column, message) = yaml::describe(&err);
        let message = if line == 0 {
            message
        } else {
            format!("{message} (line {line}, column {column})")
        };
        let field = if path == "." { String::new() } else { path };
        (field, message)
    })
}

/// An interface name a local-traffic detector matches on, required by
/// `required_by` (the setting that chose the mode, e.g. `mode BridgeInterface`).
/// It is copied into rules (iptables `-i NAME`, nftables `iifname "NAME"`), so
/// it must be a name Linux could give an interface: at most 15 bytes of
/// printable ASCII without quotes, backslashes, slashes or colons.
pub(crate) fn interface_name(field: &str, value: Option<&str>, required_by: &str) -> Result<String, Invalid> {
    let name = value
        .filter(|name| !name.is_empty())
        .ok_or_else(|| invalid(field, format!("required by {required_by}")))?;
    let fits = name.len() <= 15
        && name
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '"' | '\'' | '\\' | '/' | ':'));
    if fits {
        Ok(name.to_owned())
    } else {
        Err(invalid(field, format!("invalid interface name {name:?}")))
    }
}
