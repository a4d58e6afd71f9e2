//! Write scripts: the statements of one transaction, sent to the database together.
//!
//! sqlx runs each SQLite connection on a worker thread, and every statement is a hand-off to
//! it and back: about 50 µs on a loaded 2-core machine, far more than SQLite takes to run a
//! one-row update. A job used to make some twenty such hand-offs. A script joins a
//! transaction's writes into one multi-statement string, whose bound parameters sqlx consumes
//! in order across the statements: one hand-off. Postgres takes only one statement per message
//! when parameters are bound, so there the script runs statement by statement, in order, which
//! also keeps the order in which rows are locked.
//!
//! A statement that must change exactly one row (a conditional balance update) is *checked*:
//! it gets `RETURNING <its number>`, and after the run [`ScriptRun::changed`] says whether it
//! did. A script does not stop at a checked statement that changed nothing; the caller sees
//! the miss and rolls the whole transaction back. An error (a unique key, say) stops it, and
//! the caller rolls back too.

use std::collections::HashSet;

use sea_orm::sea_query::{Expr, Query, UpdateStatement, Values};
use sea_orm::{
    ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, Statement, StatementBuilder,
};

/// One transaction's writes, not yet sent.
pub(crate) struct Script {
    backend: DbBackend,
    statements: Vec<(Statement, Option<Check>)>,
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

    /// Adds a statement whose effect needs no check (an insert, an unconditional update).
    pub(crate) fn push(&mut self, statement: &impl StatementBuilder) {
        self.statements.push((self.backend.build(statement), None));
    }

    /// Adds an update that must change exactly one row.
    pub(crate) fn push_checked(&mut self, mut statement: UpdateStatement) -> Check {
        let check = Check(self.statements.len() as i64);
        // A literal, not a bound value: Postgres cannot infer a parameter's type here.
        statement
            .returning(Query::returning().expr(Expr::cust(format!("CAST({} AS BIGINT)", check.0))));
        self.statements.push((self.backend.build(&statement), Some(check)));
        check
    }

    /// Sends the statements inside `txn`. On an error, roll `txn` back.
    pub(crate) async fn run(self, txn: &DatabaseTransaction) -> Result<ScriptRun, DbErr> {
        let mut changed = HashSet::new();
        if self.statements.is_empty() {
            return Ok(ScriptRun { changed });
        }
        match self.backend {
            DbBackend::Sqlite => {
                let mut sql = String::new();
                let mut values = Vec::new();
                for (statement, _) in self.statements {
                    sql.push_str(&statement.sql);
                    sql.push_str(";\n");
                    if let Some(Values(more)) = statement.values {
                        values.extend(more);
                    }
                }
                let rows = txn
                    .query_all_raw(Statement::from_sql_and_values(DbBackend::Sqlite, sql, values))
                    .await?;
                for row in rows {
                    changed.insert(row.try_get_by_index::<i64>(0)?);
                }
            }
            _ => {
                for (statement, check) in self.statements {
                    if check.is_some() {
                        for row in txn.query_all_raw(statement).await? {
                            changed.insert(row.try_get_by_index::<i64>(0)?);
                        }
                    } else {
                        txn.execute_raw(statement).await?;
                    }
                }
            }
        }
        Ok(ScriptRun { changed })
    }
}
