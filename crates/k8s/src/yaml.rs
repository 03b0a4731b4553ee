//! The YAML reader settings shared by manifests and node config.

use std::borrow::Cow;

use serde_saphyr::{Budget, DefaultMessageFormatter, Localizer, Location, RenderOptions, SnippetMode};

/// Largest input accepted (a manifest of a very large cluster fits easily).
pub const MAX_INPUT_BYTES: usize = 64 * 1024 * 1024;

/// Reader options: YAML 1.2 scalars (so `kind: Y` or `name: no` stay strings and
/// `0012` is not a number) and budgets scaled to [`MAX_INPUT_BYTES`] rather than
/// the library's small-config defaults (1024 documents), keeping alias limits.
pub fn options() -> serde_saphyr::Options {
    let mut budget = Budget::default();
    budget.max_documents = MAX_INPUT_BYTES / 4;
    budget.max_nodes = MAX_INPUT_BYTES / 2;
    budget.max_events = MAX_INPUT_BYTES;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options.strict_booleans = true;
    options.leading_zero_numbers_as_strings = true;
    options.underscored_numbers_as_strings = true;
    options.with_snippet = false;
    options
}

/// Drops the " at line X, column Y" suffix: callers print the position themselves.
struct NoLocation;

impl Localizer for NoLocation {
    fn attach_location<'a>(&self, base: Cow<'a, str>, _loc: Location) -> Cow<'a, str> {
        base
    }
}

/// A reader error as (1-based line, 1-based column, message without position).
/// Position 0:0 means the reader could not tell (e.g. a budget was exceeded).
pub fn describe(err: &serde_saphyr::Error) -> (usize, usize, String) {
    let formatter = DefaultMessageFormatter.with_localizer(&NoLocation);
    let mut render = RenderOptions::new(&formatter);
    render.snippets = SnippetMode::Off;
    let message = err.render_with_options(render);
    let (line, column) = err
        .location()
        .map(|loc| (to_usize(loc.line()), to_usize(loc.column())))
        .unwrap_or((0, 0));
    (line, column, message)
}

pub fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}
