//! Test support (feature `testing`): throw-away Postgres databases.
//!
//! `TempPostgres::create` makes a uniquely named database next to the one `TEST_DATABASE_URL`
//! names, and drops it (terminating its connections) when the guard drops, even after a panic.

use sea_orm::{ConnectionTrait, DbErr};
use uuid::Uuid;

/// The admin URL for test databases, or `None` outside CI when it is unset. In CI (`CI` set)
/// a missing `TEST_DATABASE_URL` is a failure, never a skip.
#[expect(clippy::print_stderr, reason = "a skipped half of a test must say so in the test output")]
pub fn test_database_url() -> Option<String> {
    match std::env::var("TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(std::env::var_os("CI").is_none(), "TEST_DATABASE_URL must be set in CI");
            eprintln!(
                "SKIPPED: TEST_DATABASE_URL is not set; the Postgres half of this test did not run"
            );
            None
        }
    }
}

/// A Postgres database that exists for as long as this guard.
pub struct TempPostgres {
    pub url: String,
    admin_url: String,
    name: String,
}

impl TempPostgres {
    pub async fn create(admin_url: &str) -> Result<TempPostgres, DbErr> {
        let name = format!("gavel_test_{}", Uuid::new_v4().simple());
        let admin = crate::connect(admin_url, Some(1)).await?;
        admin.execute_unprepared(&format!("CREATE DATABASE \"{name}\"")).await?;
        admin.close().await?;
        Ok(TempPostgres {
            url: with_database(admin_url, &name),
            admin_url: admin_url.to_owned(),
            name,
        })
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop is synchronous; a short-lived runtime on its own thread does the cleanup.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build()
            else {
                return;
            };
            runtime.block_on(async {
                if let Ok(admin) = crate::connect(&admin_url, Some(1)).await {
                    let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                    let _ = admin.execute_unprepared(&sql).await;
                }
            });
        })
        .join();
    }
}

/// Replaces the database name in a Postgres URL, keeping any query string.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |idx| idx + 3);
    let prefix = match base[scheme_end..].find('/') {
        Some(idx) => &base[..scheme_end + idx],
        None => base,
    };
    match query {
        Some(query) => format!("{prefix}/{name}?{query}"),
        None => format!("{prefix}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_name_is_replaced() {
        assert_eq!(with_database("postgres://u@h:5432/test", "x"), "postgres://u@h:5432/x");
        assert_eq!(
            with_database("postgres://u@h/test?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h:5432", "x"), "postgres://u@h:5432/x");
    }
}
