//! Write scripts: the statements of one transaction on the pooled path (Postgres, and SQLite
//! when no server runs on the file), built first and then sent in order, which also keeps the
//! order in which rows are locked.
//!
//! A statement that must change exactly one row (a conditional balance update) is *checked*:
//! it gets `RETURNING <its number>`, and after the run [`ScriptRun::changed`] says whether it
//! did. A script does not stop at a checked statement that changed nothing; the caller sees
//! the miss and rolls the whole transaction back. An error (a unique key, say) stops it, and
//! the caller rolls back too.
//!
//! The job path on a SQLite file does not use scripts: it has its own writer
//! (`sqlite_writer`) with prepared statements.

use std::collections::HashSet;

use sea_orm::sea_query::{Expr, Query, UpdateStatement};
use sea_orm::{
    ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, Statement, StatementBuilder,
};

/// One transaction's writes, not yet sent.
pub(crate) struct Script {
    backend: DbBackend,
    statements: Vec<Entry>,
}

enum Entry {
    Plain(Statement),
    Checked(Box<UpdateStatement>, Check),
}

/// A checked statement's number within its script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Check(i64);

/// What a script's checked statements did.
#[derive(Debug)]
pub(crate) struct ScriptRun {
    changed: HashSet<i64>,
}

impl ScriptRun {
    /// Whether the checked statement changed its row.
    pub(crate) fn changed(&self, check: Check) -> bool {
        self.changed.contains(&check.0)
    }
}

impl Script {
    pub(crate) fn new(backend: DbBackend) -> Script {
        Script { backend, statements: Vec::new() }
    }

    pub(crate) fn backend(&self) -> DbBackend {
        self.backend
    }

    /// Adds a statement whose effect needs no check (an insert, an unconditional update).
    pub(crate) fn push(&mut self, statement: &impl StatementBuilder) {
        self.statements.push(Entry::Plain(self.backend.build(statement)));
    }

    /// Adds a statement already built (fixed SQL text with bound values).
    pub(crate) fn push_built(&mut self, statement: Statement) {
        self.statements.push(Entry::Plain(statement));
    }

    /// Adds an update that must change exactly one row.
    pub(crate) fn push_checked(&mut self, statement: UpdateStatement) -> Check {
        let check = Check(self.statements.len() as i64);
        self.statements.push(Entry::Checked(Box::new(statement), check));
        check
    }

    /// Sends the statements inside `txn`. On an error, roll `txn` back.
    pub(crate) async fn run(self, txn: &DatabaseTransaction) -> Result<ScriptRun, DbErr> {
        let mut changed = HashSet::new();
        if self.statements.is_empty() {
            return Ok(ScriptRun { changed });
        }
        let backend = self.backend;
        let built = self.statements.into_iter().map(|entry| match entry {
            Entry::Plain(statement) => (statement, false),
            Entry::Checked(mut update, check) => {
                // A literal, not a bound value: Postgres cannot infer a parameter's type here.
                update.returning(
                    Query::returning().expr(Expr::cust(format!("CAST({} AS BIGINT)", check.0))),
                );
                (backend.build(update.as_ref()), true)
            }
        });
        for (statement, checked) in built {
            if checked {
                for row in txn.query_all_raw(statement).await? {
                    changed.insert(row.try_get_by_index::<i64>(0)?);
                }
            } else {
                txn.execute_raw(statement).await?;
            }
        }
        Ok(ScriptRun { changed })
    }
}
