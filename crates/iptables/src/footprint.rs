//! What a text declared and deleted, beside the tables it left.

use std::collections::HashSet;

use crate::ruleset::{Chain, RuleLine};
use crate::section::Section;

/// What a text declared and deleted, beside the tables it left: what a
/// payload is arranged by (batches of whole chains, upstream's normal form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footprint<R = String> {
    /// One entry per table, in the order the text first names them.
    pub tables: Vec<TableFootprint<R>>,
}

impl<R> Default for Footprint<R> {
    fn default() -> Footprint<R> {
        Footprint { tables: Vec::new() }
    }
}

impl<R> Footprint<R> {
    /// The entry of one table, if the text has a section for it.
    pub fn table(&self, name: &str) -> Option<&TableFootprint<R>> {
        self.tables.iter().find(|t| t.table == name)
    }
}

/// What a text declared and deleted in one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableFootprint<R = String> {
    /// The table name.
    pub table: String,
    /// The chains the text declared (chain line or `-N`) or used as built-in
    /// chains, first one first, each once.
    pub declared: Vec<String>,
    /// The chains the text deleted (`-X`) and did not declare again, as they
    /// were when deleted (without rules), in the order deleted.
    pub deleted: Vec<Chain<R>>,
}

impl<R: RuleLine> Footprint<R> {
    /// Adds what one committed section declared and deleted.
    pub(crate) fn record(&mut self, section: &Section<R>) {
        let at = match self.tables.iter().position(|t| t.table == section.table) {
            Some(at) => at,
            None => {
                self.tables.push(TableFootprint {
                    table: section.table.clone(),
                    declared: Vec::new(),
                    deleted: Vec::new(),
                });
                self.tables.len() - 1
            }
        };
        let Some(entry) = self.tables.get_mut(at) else {
            return;
        };
        let mut seen: HashSet<String> = entry.declared.iter().cloned().collect();
        for name in &section.declared {
            if seen.insert(name.clone()) {
                entry.declared.push(name.clone());
            }
        }
        entry.deleted.retain(|c| !section.chains.contains_key(&c.name));
        entry.deleted.extend(section.deleted.iter().cloned());
    }
}
