//! `[plugins]`: replacement plugin files and the sandbox's limits.

use toml::Spanned;

use super::{Checker, size};
use crate::config::raw::RawPlugins;
use crate::config::{PluginSettings, defaults};

impl Checker<'_> {
    pub(super) fn plugins(&mut self, raw: RawPlugins) -> PluginSettings {
        if let Some(timeout) = &raw.call_timeout
            && timeout.get_ref().0.is_zero()
        {
            self.error(timeout.span(), "call_timeout must be more than zero");
        }
        if let Some(time) = &raw.ban_time
            && time.get_ref().0.is_zero()
        {
            self.error(
                time.span(),
                "ban_time must be more than zero (ban_after_overruns = 0 turns bans off)",
            );
        }
        if let Some(instances) = &raw.instances {
            self.at_least_one(instances, "instances");
        }
        PluginSettings {
            router: self.path(raw.router, "plugins.router"),
            balancer: self.path(raw.balancer, "plugins.balancer"),
            origin: self.path(raw.origin, "plugins.origin"),
            call_timeout: raw
                .call_timeout
                .map_or(defaults::CALL_TIMEOUT, |t| t.get_ref().0),
            call_timeout_per_mib: raw
                .call_timeout_per_mib
                .map_or(defaults::CALL_TIMEOUT_PER_MIB, |t| t.get_ref().0),
            ban_after_overruns: raw
                .ban_after_overruns
                .map_or(defaults::BAN_AFTER_OVERRUNS, Spanned::into_inner),
            ban_time: raw.ban_time.map_or(defaults::BAN_TIME, |t| t.get_ref().0),
            memory_limit: size(raw.memory_limit, defaults::MEMORY_LIMIT),
            instances: raw
                .instances
                .map_or(defaults::INSTANCES, Spanned::into_inner),
            cache_dir: self.path(raw.cache_dir, "plugins.cache_dir"),
        }
    }
}
