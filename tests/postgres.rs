//! The local PostgreSQL accepts the sink's kind of work: a database of the
//! test's own, a table, a transaction, and cleanup.

mod common;

async fn connect(db: &str) -> tokio_postgres::Client {
    common::sink::pg_connect(&common::Stack::from_env(), db).await
}

#[tokio::test]
async fn postgres_connects_and_commits() {
    let s = common::Stack::from_env();
    let admin = connect(&s.pg_database).await;
    let db = common::unique("pg_connect");
    admin
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .unwrap();

    {
        let mut client = connect(&db).await;
        client
            .batch_execute("CREATE TABLE t (id bigint PRIMARY KEY, amount numeric(65,30), at timestamp(6))")
            .await
            .unwrap();
        let tx = client.transaction().await.unwrap();
        tx.execute(
            "INSERT INTO t VALUES (1, '12345678901234567890123456789012345.123456789012345678901234567890', '2024-02-29 23:59:59.999999')",
            &[],
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        let row = client
            .query_one("SELECT amount::text, at::text FROM t WHERE id = 1", &[])
            .await
            .unwrap();
        assert_eq!(
            row.get::<_, String>(0),
            "12345678901234567890123456789012345.123456789012345678901234567890"
        );
        assert_eq!(row.get::<_, String>(1), "2024-02-29 23:59:59.999999");
    }

    admin
        .batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .await
        .unwrap();
}
