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
//!
//! A script can also be *sealed* for a connection of its own (see `jobs::JobWriter`): the
//! transaction's `COMMIT` goes at its end, and each checked statement is followed by a guard
//! row whose `CHECK` fails when the statement changed nothing, so a miss stops the script
//! before it commits. The owner of the connection then rolls back.

use std::collections::HashSet;

use sea_orm::sea_query::{Expr, Query, UpdateStatement, Values};
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

/// Creates the guard table of sealed scripts (per connection, so a temporary table).
const GUARD_TABLE: &str = "CREATE TEMP TABLE IF NOT EXISTS gavel_script_guard \
     (id INTEGER PRIMARY KEY, changed INTEGER NOT NULL CHECK (changed = 1))";
/// Fails the script when the statement before it changed no row.
const GUARD: &str =
    "INSERT OR REPLACE INTO temp.gavel_script_guard (id, changed) VALUES (1, changes())";

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
        self.statements.push(Entry::Plain(self.backend.build(statement)));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.statements.is_empty()
    }

    /// Adds every statement of `other`, after this script's.
    pub(crate) fn append(&mut self, other: Script) {
        self.statements.extend(other.statements);
    }

    /// Adds an update that must change exactly one row.
    pub(crate) fn push_checked(&mut self, statement: UpdateStatement) -> Check {
        let check = Check(self.statements.len() as i64);
        self.statements.push(Entry::Checked(Box::new(statement), check));
        check
    }

    /// The statements as one SQLite statement string, unsealed: no guard, no `COMMIT`.
    pub(crate) fn joined(self) -> Statement {
        let mut joined = Joined::default();
        for entry in self.statements {
            match entry {
                Entry::Plain(statement) => joined.push(statement),
                Entry::Checked(update, _) => joined.push(DbBackend::Sqlite.build(update.as_ref())),
            }
        }
        joined.statement()
    }

    /// The script as one SQLite statement string for a connection of its own, ending with
    /// `COMMIT` when `commit` is set. A checked statement that changes nothing fails it.
    pub(crate) fn sealed(self, commit: bool) -> Statement {
        let mut joined = Joined::default();
        joined.push(Statement::from_string(DbBackend::Sqlite, GUARD_TABLE));
        for entry in self.statements {
            match entry {
                Entry::Plain(statement) => joined.push(statement),
                Entry::Checked(update, _) => {
                    joined.push(DbBackend::Sqlite.build(update.as_ref()));
                    joined.push(Statement::from_string(DbBackend::Sqlite, GUARD));
                }
            }
        }
        if commit {
            joined.push(Statement::from_string(DbBackend::Sqlite, "COMMIT"));
        }
        joined.statement()
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
        match backend {
            DbBackend::Sqlite => {
                let mut joined = Joined::default();
                built.for_each(|(statement, _)| joined.push(statement));
                for row in txn.query_all_raw(joined.statement()).await? {
                    changed.insert(row.try_get_by_index::<i64>(0)?);
                }
            }
            _ => {
                for (statement, checked) in built {
                    if checked {
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

/// SQLite statements joined into one string; sqlx binds the values in order across them.
#[derive(Default)]
struct Joined {
    sql: String,
    values: Vec<sea_orm::Value>,
}

impl Joined {
    fn push(&mut self, statement: Statement) {
        self.sql.push_str(&statement.sql);
        self.sql.push_str(";\n");
        if let Some(Values(more)) = statement.values {
            self.values.extend(more);
        }
    }

    fn statement(self) -> Statement {
        Statement::from_sql_and_values(DbBackend::Sqlite, self.sql, self.values)
    }
}
