//! One `*table ... COMMIT` section, applied to a copy of its table: what each
//! chain line and command does, and the kernel's check at `COMMIT`.

use std::collections::HashSet;

use crate::builtin::{is_builtin_chain, is_builtin_target};
use crate::read::{ChainLine, Command, ReadProblem};
use crate::ruleset::{Chain, RuleLine, Table};
use crate::tokenize::jump_of;

/// Whether a jump to a name that is no chain is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Jumps {
    /// As the kernel does: the name must be a chain or a target iptables has.
    MustExist,
    /// Only if the text itself deleted that chain.
    AsWritten,
}

/// Why a command was refused: its rule, or anything else.
enum Refusal {
    Rule(String),
    Other(String),
}

impl From<String> for Refusal {
    fn from(reason: String) -> Refusal {
        Refusal::Other(reason)
    }
}

/// One `*table ... COMMIT` section being applied to a copy of its table.
pub(crate) struct Section<R> {
    pub(crate) table: String,
    pub(crate) chains: Table<R>,
    /// Chains declared or created, with repeats.
    pub(crate) declared: Vec<String>,
    /// Chains deleted and not declared again.
    pub(crate) deleted: Vec<Chain<R>>,
}

impl<R: RuleLine> Section<R> {
    pub(crate) fn new(table: &str, chains: Table<R>) -> Section<R> {
        Section {
            table: table.to_string(),
            chains,
            declared: Vec::new(),
            deleted: Vec::new(),
        }
    }

    /// A chain line: creates or flushes a user chain; sets a built-in
    /// chain's policy when one is given.
    pub(crate) fn declare(&mut self, line: &ChainLine) {
        self.declared.push(line.name.to_string());
        if !self.deleted.is_empty() {
            self.deleted.retain(|c| c.name != line.name);
        }
        let builtin = is_builtin_chain(&self.table, line.name);
        let chain = self
            .chains
            .entry(line.name.to_string())
            .or_insert_with(|| Chain::new(&self.table, line.name));
        if !builtin {
            chain.rules.clear();
        } else if let Some(policy) = line.policy {
            chain.policy = Some(policy.to_string());
        }
        chain.counters = line.counters;
    }

    /// Runs one command; a rule the rule type refuses is a
    /// [`ReadProblem::Rule`], anything else refused a [`ReadProblem::Refused`].
    pub(crate) fn run(&mut self, command: Command) -> Result<(), ReadProblem> {
        self.run_parsed(command).map_err(|problem| match problem {
            Refusal::Rule(reason) => ReadProblem::Rule(reason),
            Refusal::Other(reason) => ReadProblem::Refused(reason),
        })
    }

    fn run_parsed(&mut self, command: Command) -> Result<(), Refusal> {
        match command {
            Command::Append { chain, rule } => {
                let rule = R::from_line(rule).map_err(Refusal::Rule)?;
                self.chain_mut(&chain)?.rules.push(rule);
            }
            Command::Insert {
                chain,
                position,
                rule,
            } => {
                let rule = R::from_line(rule).map_err(Refusal::Rule)?;
                let rules = &mut self.chain_mut(&chain)?.rules;
                if position == 0 || position > rules.len() + 1 {
                    return Err(Refusal::Other(format!(
                        "index {position} out of range in {chain}"
                    )));
                }
                rules.insert(position - 1, rule);
            }
            Command::DeleteNumber { chain, number } => {
                let rules = &mut self.chain_mut(&chain)?.rules;
                if number == 0 || number > rules.len() {
                    return Err(Refusal::Other(format!("no rule {number} in {chain}")));
                }
                rules.remove(number - 1);
            }
            Command::DeleteRule { chain, rule } => {
                let wanted = R::from_line(rule).map_err(Refusal::Rule)?;
                let rules = &mut self.chain_mut(&chain)?.rules;
                let position = rules
                    .iter()
                    .position(|r| r.line() == wanted.line())
                    .or_else(|| rules.iter().position(|r| r.same_rule(&wanted)));
                let Some(position) = position else {
                    return Err(Refusal::Other(format!(
                        "no such rule in {chain}: {:?}",
                        wanted.line()
                    )));
                };
                rules.remove(position);
            }
            Command::NewChain(name) => {
                if self.chains.contains_key(&*name) || is_builtin_chain(&self.table, &name) {
                    return Err(Refusal::Other(format!("chain {name} already exists")));
                }
                self.declare(&ChainLine {
                    name: &name,
                    policy: None,
                    counters: (0, 0),
                });
            }
            Command::Flush(None) => self.chains.values_mut().for_each(|c| c.rules.clear()),
            Command::Flush(Some(chain)) => self.chain_mut(&chain)?.rules.clear(),
            Command::Policy { chain, policy } => {
                if !is_builtin_chain(&self.table, &chain) || policy.is_empty() || policy == "-" {
                    return Err(Refusal::Other(format!("cannot set policy {policy:?} on {chain}")));
                }
                self.chain_mut(&chain)?.policy = Some(policy.into_owned());
            }
            Command::DeleteChain(name) => {
                if is_builtin_chain(&self.table, &name) {
                    return Err(Refusal::Other(format!("cannot delete built-in chain {name}")));
                }
                let Some(chain) = self.chains.get(&*name) else {
                    return Err(Refusal::Other(format!("cannot delete missing chain {name:?}")));
                };
                if !chain.rules.is_empty() {
                    return Err(Refusal::Other(format!("cannot delete non-empty chain {name}")));
                }
                self.deleted.extend(self.chains.remove(&*name));
            }
            Command::Zero => {}
        }
        Ok(())
    }

    /// A chain the section may change: a user chain must exist, a built-in
    /// chain always does.
    fn chain_mut(&mut self, name: &str) -> Result<&mut Chain<R>, String> {
        if is_builtin_chain(&self.table, name) {
            if !self.chains.contains_key(name) {
                self.declared.push(name.to_string());
            }
            return Ok(self
                .chains
                .entry(name.to_string())
                .or_insert_with(|| Chain::new(&self.table, name)));
        }
        self.chains
            .get_mut(name)
            .ok_or_else(|| format!("chain {name} does not exist in table {}", self.table))
    }

    /// The kernel's check at `COMMIT`: no rule jumps to a chain that is gone.
    pub(crate) fn check_jumps(&self, jumps: Jumps) -> Result<(), String> {
        if jumps == Jumps::AsWritten && self.deleted.is_empty() {
            return Ok(());
        }
        let deleted: HashSet<&str> = self.deleted.iter().map(|c| c.name.as_str()).collect();
        for rule in self.chains.values().flat_map(|c| &c.rules) {
            let Some(target) = jump_of(rule.line()) else {
                continue;
            };
            if self.chains.contains_key(&*target) || is_builtin_target(&target) {
                continue;
            }
            if deleted.contains(&*target) {
                return Err(format!("deleted chain still referenced by {:?}", rule.line()));
            }
            if jumps == Jumps::MustExist {
                return Err(format!("rule jumps to missing chain {target}: {:?}", rule.line()));
            }
        }
        Ok(())
    }
}
