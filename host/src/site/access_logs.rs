//! Where each server of a configuration logs its requests: its
//! `access_log` opened (files get a fresh handle, which is how a reload
//! reopens them), and which server's log a listen address's requests go to
//! before the router names a location.

use crate::access_log::{Destination, LogFiles};
use crate::config::{AccessLog, Config};
use std::collections::HashMap;

use super::SiteError;

pub struct AccessLogs {
    /// One per server, in file order.
    pub servers: Vec<Destination>,
    /// A listen address (as written) → its first (default) server's.
    pub listeners: HashMap<String, Destination>,
    /// For an address no server listens on any more (a connection accepted
    /// before a reload removed it).
    pub stderr: Destination,
}

impl AccessLogs {
    /// Opens every file `config` names, once each. Blocking.
    pub fn open(config: &Config, files: &LogFiles) -> Result<AccessLogs, SiteError> {
        let mut opened: HashMap<&AccessLog, Destination> = HashMap::new();
        let mut servers = Vec::new();
        let mut listeners = HashMap::new();
        for server in &config.servers {
            let destination = match opened.get(&server.access_log) {
                Some(destination) => destination.clone(),
                None => {
                    let destination = match &server.access_log {
                        AccessLog::Off => Destination::Off,
                        AccessLog::Stderr => Destination::Stderr { json: files.json() },
                        AccessLog::File(path) => {
                            Destination::File(files.open(path).map_err(|error| {
                                SiteError::AccessLog {
                                    path: path.clone(),
                                    error,
                                }
                            })?)
                        }
                    };
                    opened.insert(&server.access_log, destination.clone());
                    destination
                }
            };
            for listen in &server.listen {
                listeners
                    .entry(listen.clone())
                    .or_insert_with(|| destination.clone());
            }
            servers.push(destination);
        }
        Ok(AccessLogs {
            servers,
            listeners,
            stderr: Destination::Stderr { json: files.json() },
        })
    }
}
