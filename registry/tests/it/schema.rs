//! What the migrations leave behind that no query shows: on Postgres, the compression of the
//! large text columns a job writes.

use sea_orm::{ConnectionTrait, DbBackend, Statement};

/// The audit record and the output are stored with lz4 on a server that has it (this one
/// must: the CI's Postgres is built with lz4, as Debian's is).
#[tokio::test]
async fn postgres_compresses_records_and_outputs_with_lz4() {
    let Some(test_db) = crate::helpers::postgres().await else {
        eprintln!("SKIPPED: TEST_DATABASE_URL is not set; this test is about Postgres only");
        return;
    };
    for (table, column) in [("auctions", "record"), ("jobs", "output")] {
        let row = test_db
            .db
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT attcompression::text AS method FROM pg_attribute \
                 WHERE attrelid = $1::regclass AND attname = $2",
                [table.into(), column.into()],
            ))
            .await
            .unwrap()
            .unwrap();
        let method: String = row.try_get("", "method").unwrap();
        assert_eq!(method, "l", "{table}.{column}");
    }
}
