//! `[cluster]`: the Redis address and this process's name among the others.

use toml::Spanned;

use super::{Checker, Dur};
use crate::config::raw::RawCluster;
use crate::config::{ClusterSettings, defaults};

impl Checker<'_> {
    pub(super) fn cluster(&mut self, cluster: Spanned<RawCluster>) -> ClusterSettings {
        let raw = cluster.into_inner();
        let redis = raw.redis.get_ref().clone();
        if !(redis.starts_with("redis://") || redis.starts_with("rediss://"))
            || redis
                .trim_start_matches("rediss://")
                .trim_start_matches("redis://")
                .is_empty()
        {
            self.error(
                raw.redis.span(),
                "cluster.redis: expected a redis://host:port (or rediss:// for TLS) address",
            );
        }
        let instance = match raw.instance {
            Some(instance) => {
                let name = instance.get_ref();
                if name.is_empty()
                    || name.len() > 64
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                {
                    self.error(
                        instance.span(),
                        "cluster.instance: 1 to 64 letters, digits, `-`, `_` or `.`",
                    );
                }
                Some(instance.into_inner())
            }
            None => None,
        };
        let mut positive = |value: Option<Spanned<Dur>>, name, default| {
            value.map_or(default, |value| {
                if value.get_ref().0.is_zero() {
                    self.error(value.span(), format!("cluster.{name} must be above zero"));
                }
                value.into_inner().0
            })
        };
        let timeout = positive(raw.timeout, "timeout", defaults::CLUSTER_TIMEOUT);
        let retry = positive(raw.retry, "retry", defaults::CLUSTER_RETRY);
        ClusterSettings {
            redis,
            instance,
            timeout,
            retry,
        }
    }
}
