//! Echo suppression: whether a vendor's event is huitong's own write coming back.

use super::SyncError;
use super::connect::Endpoint;
use super::diff::echo_hash;
use super::read::read_canonical;
use crate::model::Entity;
use crate::store::Store;

/// Whether `external_id` of `entity` in `endpoint` holds exactly what huitong last wrote there
/// (the hash recorded in its xref, so this survives a restart): the event it emitted about the
/// record is the echo of that write, and nothing needs to flow back.
pub async fn is_echo(
    store: &dyn Store,
    endpoint: &Endpoint,
    entity: Entity,
    external_id: &str,
) -> Result<bool, SyncError> {
    let Some(xref) = store
        .find_by_external(entity, &endpoint.name, external_id)
        .await?
    else {
        return Ok(false);
    };
    let Some(written) = xref.last_written_hash else {
        return Ok(false);
    };
    let maps = endpoint.mappings();
    Ok(
        read_canonical(store, endpoint, &maps, entity, external_id, false)
            .await?
            .is_some_and(|r| echo_hash(maps.of(entity), &r.canonical.value()) == written),
    )
}
