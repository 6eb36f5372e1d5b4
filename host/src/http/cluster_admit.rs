//! Phase 2b, with `[cluster]`: `limit_req` and `limit_conn` across the
//! processes sharing Redis, after this process's own limits admitted the
//! request (they see a part of the cluster's traffic, so they never refuse
//! what the cluster would admit). Waits for Redis at most
//! `[cluster] timeout`; without an answer the local decision stands.

use super::context::{Refusal, RequestContext};

pub(super) async fn admit_cluster(ctx: &mut RequestContext<'_>) -> Result<(), Refusal> {
    let Some(cluster) = ctx.shared.cluster.get() else {
        return Ok(());
    };
    let location = ctx.location;
    let config = &location.config;
    let client = ctx.conn.client;
    if let (Some(limit), Some(key)) = (&config.limit_req, &location.limit_req_key) {
        // The same key as the local bucket's.
        let key = format!("{}\0{}", location.label, key.expand(&ctx.vars("")));
        if cluster
            .allow_rate(&key, limit.rate_per_sec, limit.burst)
            .await
            == Some(false)
        {
            tracing::warn!(%client, location = %location.label, "limiting requests across the cluster (limit_req)");
            return Err(Refusal::new(503, "too many requests"));
        }
    }
    let (Some(limit), true) = (config.limit_conn, ctx.slot.is_some()) else {
        return Ok(());
    };
    let key = format!(
        "{}\0{}",
        location.label,
        location.limit_conn_key.expand(&ctx.vars(""))
    );
    match cluster.acquire_conn(key, limit).await {
        Some(counted) => {
            if let Some(slot) = ctx.slot.as_mut() {
                slot.hold(counted);
            }
            Ok(())
        }
        None => {
            tracing::warn!(%client, location = %location.label, limit, "limiting connections across the cluster (limit_conn)");
            Err(Refusal::new(
                config.limit_conn_status,
                "too many connections",
            ))
        }
    }
}
