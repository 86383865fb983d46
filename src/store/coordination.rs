//! Work that only one of the instances sharing a store may do at a time.
//!
//! With PostgreSQL a role is a session-level advisory lock held on a connection of its own
//! for as long as the process runs: if the process dies, its connection closes and the role
//! is free for the next instance that starts. An SQLite file has one daemon, which always
//! holds every role.

use sqlx::PgConnection;

use super::backend::Pool;
use super::{Store, StoreError};

/// A role this process holds until the value is dropped.
pub struct RoleLock {
    session: Option<PgConnection>,
}

/// Roles, as the second key of the advisory lock (the first is the schema, so instances
/// of separate deployments sharing one database do not exclude each other).
#[derive(Debug, Clone, Copy)]
pub enum Role {
    Registration = 1,
    /// Working through the forwarding outbox: one instance attempts deliveries, so a
    /// pending delivery is never attempted by two at once.
    Forwarding = 2,
}

impl RoleLock {
    /// Whether the role is still this process's: fails once the lock's session has ended
    /// (the server restarted, or the connection was cut), which frees the role for other
    /// instances. The round trip also keeps an idle session from being timed out.
    pub async fn check(&mut self) -> Result<(), StoreError> {
        if let Some(session) = &mut self.session {
            let ping = sqlx::query("SELECT 1").execute(session);
            super::postgres::within("answer the lock check", ping).await?;
        }
        Ok(())
    }
}

impl Store {
    /// Take `role` for this process, or `None` if another instance holds it.
    pub async fn try_take_role(&self, role: Role) -> Result<Option<RoleLock>, StoreError> {
        let Pool::Postgres(pool) = &self.pool else {
            return Ok(Some(RoleLock { session: None }));
        };
        let mut session = super::postgres::connect(&pool.connect_options()).await?;
        let taken: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext(current_schema()), $1)")
                .bind(role as i32)
                .fetch_one(&mut session)
                .await?;
        Ok(taken.then_some(RoleLock {
            session: Some(session),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Backend;
    use crate::store::backend::on_pool;
    use crate::store::test_db::TestDb;

    #[tokio::test]
    async fn one_instance_holds_a_role_until_it_lets_go() {
        crate::skip_unless_available!(Backend::Postgres);
        let db = TestDb::new(Backend::Postgres).await;
        let other = Store::open(&db.url).await.unwrap();
        let held = db.store.try_take_role(Role::Registration).await.unwrap();
        assert!(held.is_some());
        assert!(
            other
                .try_take_role(Role::Registration)
                .await
                .unwrap()
                .is_none()
        );
        drop(held);
        // The server frees the lock once it sees the session end.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if other
                .try_take_role(Role::Registration)
                .await
                .unwrap()
                .is_some()
            {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the role was never freed"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        other.close().await;
        db.finish().await;
    }

    #[tokio::test]
    async fn a_lock_whose_session_ended_says_so() {
        crate::skip_unless_available!(Backend::Postgres);
        let db = TestDb::new(Backend::Postgres).await;
        let mut held = db
            .store
            .try_take_role(Role::Registration)
            .await
            .unwrap()
            .unwrap();
        held.check().await.unwrap();
        let holder: i32 = on_pool!(db.store, pool => sqlx::query_scalar(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted \
             AND classid::int = hashtext(current_schema()) AND objid = $1"
        )
        .bind(Role::Registration as i32)
        .fetch_one(pool)
        .await)
        .unwrap();
        on_pool!(db.store, pool => sqlx::query("SELECT pg_terminate_backend($1)")
            .bind(holder)
            .execute(pool)
            .await
            .map(drop))
        .unwrap();
        // The server ends the session on its own time.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while held.check().await.is_ok() {
            assert!(
                std::time::Instant::now() < deadline,
                "the session never ended"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        db.finish().await;
    }

    #[tokio::test]
    async fn an_sqlite_store_always_holds_every_role() {
        let db = TestDb::new(Backend::Sqlite).await;
        assert!(
            db.store
                .try_take_role(Role::Registration)
                .await
                .unwrap()
                .is_some()
        );
        db.finish().await;
    }
}
