//! Users and API keys against a real database.

use chrono::Utc;
use registry::{Email, Handle, KeyName, NewUser, RegistryError};
use uuid::Uuid;

use crate::helpers::{all_backends, user};

#[tokio::test]
async fn emails_and_handles_are_unique() {
    for (backend, test_db) in all_backends().await {
        let db = test_db.db.clone();
        let email = Email::parse(&format!("{}@Example.com", Uuid::new_v4().simple())).unwrap();
        let first = NewUser {
            email: email.clone(),
            handle: Some(Handle::parse("first-one").unwrap()),
            password_hash: "h".into(),
        };
        registry::create_user(&db, first, Uuid::now_v7(), Utc::now()).await.unwrap();

        let same_email = NewUser { email: email.clone(), handle: None, password_hash: "h".into() };
        assert!(
            matches!(
                registry::create_user(&db, same_email, Uuid::now_v7(), Utc::now()).await,
                Err(RegistryError::EmailTaken)
            ),
            "{backend}"
        );

        let other = Email::parse("someone.else@example.com").unwrap();
        let same_handle = NewUser {
            email: other.clone(),
            handle: Some(Handle::parse("FIRST-ONE").unwrap()),
            password_hash: "h".into(),
        };
        assert!(
            matches!(
                registry::create_user(&db, same_handle, Uuid::now_v7(), Utc::now()).await,
                Err(RegistryError::HandleTaken)
            ),
            "{backend}"
        );

        // A derived handle that collides gets a suffix instead of an error.
        let a = NewUser {
            email: Email::parse("ada@one.example").unwrap(),
            handle: None,
            password_hash: "h".into(),
        };
        let b = NewUser {
            email: Email::parse("ada@two.example").unwrap(),
            handle: None,
            password_hash: "h".into(),
        };
        let a = registry::create_user(&db, a, Uuid::now_v7(), Utc::now()).await.unwrap();
        let b = registry::create_user(&db, b, Uuid::now_v7(), Utc::now()).await.unwrap();
        assert_eq!(a.handle, "ada");
        assert!(b.handle.starts_with("ada-") && b.handle != a.handle, "{}", b.handle);
    }
}

#[tokio::test]
async fn keys_authenticate_until_revoked_and_only_their_owner_can_revoke_them() {
    for (backend, test_db) in all_backends().await {
        let db = test_db.db.clone();
        let alice = user(&db).await;
        let bob = user(&db).await;
        let key = registry::create_api_key(
            &db,
            alice,
            KeyName::parse("ci").unwrap(),
            Uuid::now_v7(),
            Utc::now(),
        )
        .await
        .unwrap();
        let owner =
            registry::authenticate_api_key(&db, &key.secret, Utc::now()).await.unwrap().unwrap();
        assert_eq!(owner.user_id, alice, "{backend}");

        assert!(
            matches!(
                registry::revoke_api_key(&db, bob, key.info.id, Utc::now()).await,
                Err(RegistryError::NotFound { .. })
            ),
            "{backend}"
        );
        assert!(
            registry::authenticate_api_key(&db, &key.secret, Utc::now()).await.unwrap().is_some()
        );
        assert!(registry::list_api_keys(&db, bob).await.unwrap().is_empty());

        let listed = registry::list_api_keys(&db, alice).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].prefix, &key.secret[..12]);
        assert!(listed[0].last_used_at.is_some(), "{backend}: use is recorded");

        registry::revoke_api_key(&db, alice, key.info.id, Utc::now()).await.unwrap();
        assert!(
            registry::authenticate_api_key(&db, &key.secret, Utc::now()).await.unwrap().is_none(),
            "{backend}"
        );
        // Idempotent for the owner.
        registry::revoke_api_key(&db, alice, key.info.id, Utc::now()).await.unwrap();
        assert!(
            registry::authenticate_api_key(&db, "gvl_not-a-key", Utc::now())
                .await
                .unwrap()
                .is_none()
        );
    }
}
