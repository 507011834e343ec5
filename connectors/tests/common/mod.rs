//! Helpers shared by the vendor sandbox tests.

use huitong_connectors::capability::{Entity, WriteEntities};
use serde_json::Value;

/// Creates `record` twice with `key`, as a retry after a lost reply would, and returns the id
/// after checking that both attempts answered the same one.
pub async fn create_twice<C: WriteEntities + ?Sized>(
    conn: &C,
    entity: Entity,
    record: Value,
    key: &str,
) -> String {
    let first = conn
        .create_keyed(entity, record.clone(), key)
        .await
        .unwrap();
    let again = conn.create_keyed(entity, record, key).await.unwrap();
    assert_eq!(
        first, again,
        "a repeated {entity:?} create returns the first record"
    );
    first
}

/// Deletes `id` twice: the second finds it gone, and that is done too.
pub async fn delete_twice<C: WriteEntities + ?Sized>(conn: &C, entity: Entity, id: &str) {
    conn.delete(entity, id).await.unwrap();
    conn.delete(entity, id).await.unwrap();
}
