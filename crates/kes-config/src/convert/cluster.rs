//! The `cluster:` section: node id, node-to-node listener and advertised address, data
//! directory, initial members and the mutual TLS files.

use std::collections::BTreeMap;

use super::{listen_addr, Cx};
use crate::lines::join;
use crate::raw::{self, Scalar};
use crate::{ClusterConfig, ClusterTls, ConfigError};

impl Cx<'_> {
    pub(super) fn cluster(&mut self, raw: raw::RawCluster) -> Result<ClusterConfig, ConfigError> {
        let node_id = self.node_id(raw.node_id.as_ref(), "cluster.node_id")?;

        let addr_text = self.required(raw.address.as_ref(), "cluster.address")?;
        let address = listen_addr(&addr_text)
            .ok_or_else(|| self.invalid("cluster.address", &addr_text, "want ip:port or :port"))?;

        let mut members = BTreeMap::new();
        for (id_text, addr) in raw.members.unwrap_or_default().0 {
            let path = join("cluster.members", &id_text);
            let id = self.node_id(Some(&Scalar(id_text.clone())), &path)?;
            let addr = self.required(Some(&addr), &path)?;
            if !is_host_port(&addr) {
                return Err(self.invalid(&path, &addr, "want host:port"));
            }
            if members.contains_key(&id) {
                return Err(self.invalid(&path, &id_text, "node id is listed more than once"));
            }
            if let Some((other, _)) = members.iter().find(|(_, a)| **a == addr) {
                return Err(self.invalid(
                    &path,
                    &addr,
                    format!("address is already used by node {other}"),
                ));
            }
            members.insert(id, addr);
        }
        if !members.is_empty() && !members.contains_key(&node_id) {
            return Err(self.invalid(
                "cluster.node_id",
                &node_id.to_string(),
                "node is not in cluster.members",
            ));
        }

        let advertise = match self.text(raw.advertise.as_ref(), "cluster.advertise")? {
            Some(a) => {
                if !is_host_port(&a) {
                    return Err(self.invalid("cluster.advertise", &a, "want host:port"));
                }
                if let Some(m) = members.get(&node_id).filter(|m| **m != a) {
                    let msg = format!(
                        "cluster.advertise '{a}' differs from this node's cluster.members entry '{m}'{}",
                        self.at("cluster.advertise")
                    );
                    self.warnings.push(msg);
                }
                a
            }
            // Peers reach this node at the address the other nodes were given for it; the
            // listen address (often 0.0.0.0) is only the last resort.
            None => members.get(&node_id).cloned().unwrap_or(addr_text),
        };

        let data_dir = self.required(raw.data_dir.as_ref(), "cluster.data_dir")?;
        let rt = raw.tls.unwrap_or_default();
        let tls = ClusterTls {
            key: self.required(rt.key.as_ref(), "cluster.tls.key")?.into(),
            cert: self.required(rt.cert.as_ref(), "cluster.tls.cert")?.into(),
            ca: self.required(rt.ca.as_ref(), "cluster.tls.ca")?.into(),
        };
        Ok(ClusterConfig {
            node_id,
            address,
            advertise,
            data_dir: data_dir.into(),
            members,
            tls,
        })
    }

    fn node_id(&self, value: Option<&Scalar>, path: &str) -> Result<u64, ConfigError> {
        let s = self.required(value, path)?;
        match s.trim().parse::<u64>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(self.invalid(path, &s, "want a node id >= 1")),
        }
    }
}

/// `host:port` or `[v6]:port` with a non-zero port: an address a peer can dial.
pub(super) fn is_host_port(s: &str) -> bool {
    let Some((host, port)) = s.rsplit_once(':') else {
        return false;
    };
    let port_ok = port.parse::<u16>().is_ok_and(|p| p != 0);
    let host_ok = match host.strip_prefix('[') {
        Some(v6) => v6
            .strip_suffix(']')
            .is_some_and(|h| h.parse::<std::net::Ipv6Addr>().is_ok()),
        None => {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
        }
    };
    port_ok && host_ok
}
