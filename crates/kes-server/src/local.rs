//! A local cluster on 127.0.0.1: certificates, an admin API key and one configuration file per
//! node, with a filesystem keystore in the same folder shared by every node (the embedded
//! default: no external service). `kes cluster local` runs it; the integration tests use it to
//! start real node processes.

use kes_crypto::ApiKey;
use kes_tls::ca::{Ca, IssueRequest, KeyType, Profile, DEFAULT_CA_VALIDITY};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Certificates of a local cluster are valid this long.
pub const LOCAL_CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate generation failed: {0}")]
    Cert(String),
}

/// One node of a local cluster.
#[derive(Clone, Debug)]
pub struct LocalNode {
    pub id: u64,
    pub api_port: u16,
    pub peer_port: u16,
    pub config: PathBuf,
    pub data_dir: PathBuf,
}

impl LocalNode {
    pub fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.api_port)
    }
}

/// The files of a local cluster.
#[derive(Debug)]
pub struct LocalCluster {
    pub dir: PathBuf,
    pub nodes: Vec<LocalNode>,
    pub api_key: ApiKey,
    /// The CA that signed the nodes' API certificates (for `MINIO_KMS_KES_CAPATH`, `--ca`).
    pub ca_file: PathBuf,
    pub keystore_dir: PathBuf,
}

/// Options of [`LocalCluster::generate`].
#[derive(Clone, Debug)]
pub struct LocalOptions {
    pub nodes: u64,
    /// API ports are `base_port + i - 1`, node-to-node ports `base_port + 100 + i - 1`.
    pub base_port: u16,
    /// Extra YAML appended to every node's configuration.
    pub extra_yaml: String,
    /// `cache.expiry.offline`.
    pub offline: String,
    /// More `cache.expiry` lines (`any: 5s`), indented as under `expiry:`.
    pub expiry_yaml: String,
    /// The body of the `keystore:` section (indented as under it); `None` for the shared
    /// filesystem keystore in the cluster's folder.
    pub keystore_yaml: Option<String>,
    /// Explicit ports (api, peer) per node, overriding `base_port` (tests use free ports).
    pub ports: Option<Vec<(u16, u16)>>,
    /// How many of the nodes form the initial group; the others are configured to join later
    /// (no `members`, so they wait to be added with `kes cluster add`).
    pub initial_members: Option<u64>,
}

impl Default for LocalOptions {
    fn default() -> Self {
        Self {
            nodes: 3,
            base_port: 7373,
            extra_yaml: String::new(),
            offline: "1h".into(),
            expiry_yaml: String::new(),
            keystore_yaml: None,
            ports: None,
            initial_members: None,
        }
    }
}

fn write(path: &Path, data: impl AsRef<[u8]>, private: bool) -> Result<(), LocalError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| LocalError::Io {
        path: path.to_owned(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(path)
        .map_err(io)?;
    f.write_all(data.as_ref()).map_err(io)
}

impl LocalCluster {
    /// Writes certificates and configurations for `opts.nodes` nodes into `dir`.
    pub fn generate(dir: &Path, opts: &LocalOptions) -> Result<Self, LocalError> {
        let mkdir = |p: &Path| {
            std::fs::create_dir_all(p).map_err(|source| LocalError::Io {
                path: p.to_owned(),
                source,
            })
        };
        mkdir(dir)?;
        // The same CA code as `kes ca`: a server certificate for the API, node certificates
        // (both usages, kes-node-<id>) from a separate cluster CA.
        let cert_err = |e: kes_tls::ca::CaError| LocalError::Cert(e.to_string());
        let api_ca = Ca::generate("kes local API CA", DEFAULT_CA_VALIDITY, KeyType::EcdsaP256)
            .map_err(cert_err)?;
        let peer_ca = Ca::generate(
            "kes local cluster CA",
            DEFAULT_CA_VALIDITY,
            KeyType::EcdsaP256,
        )
        .map_err(cert_err)?;
        let api_key = ApiKey::generate();
        let ca_file = dir.join("ca.cert");
        write(&ca_file, api_ca.cert_pem(), false)?;
        write(&dir.join("cluster-ca.cert"), peer_ca.cert_pem(), false)?;
        // Kept so that more certificates can be issued (`kes ca issue node --id 4 ...`).
        write(&dir.join("ca.key"), api_ca.key_pem().as_bytes(), true)?;
        write(
            &dir.join("cluster-ca.key"),
            peer_ca.key_pem().as_bytes(),
            true,
        )?;
        write(&dir.join("admin.key"), api_key.to_text(), true)?;
        let keystore_dir = dir.join("keys");
        mkdir(&keystore_dir)?;

        let lo = [IpAddr::V4(Ipv4Addr::LOCALHOST)];
        let ports: Vec<(u16, u16)> = match &opts.ports {
            Some(p) => p.clone(),
            None => (0..opts.nodes as u16)
                .map(|i| (opts.base_port + i, opts.base_port + 100 + i))
                .collect(),
        };
        let initial = opts
            .initial_members
            .unwrap_or(opts.nodes.max(ports.len() as u64));
        let members: String = ports
            .iter()
            .enumerate()
            .take(initial as usize)
            .map(|(i, (_, peer))| format!("    {}: 127.0.0.1:{peer}\n", i + 1))
            .collect();
        let mut nodes = Vec::new();
        for (i, (api_port, peer_port)) in ports.iter().enumerate() {
            let id = i as u64 + 1;
            let node_dir = dir.join(format!("node{id}"));
            mkdir(&node_dir)?;
            let api = api_ca
                .issue(&IssueRequest {
                    dns: vec!["localhost".into()],
                    ips: lo.to_vec(),
                    valid_for: LOCAL_CERT_VALIDITY,
                    ..IssueRequest::new(Profile::Server)
                })
                .map_err(cert_err)?;
            let peer = peer_ca
                .issue(&IssueRequest {
                    ips: lo.to_vec(),
                    valid_for: LOCAL_CERT_VALIDITY,
                    ..IssueRequest::new(Profile::Node { id })
                })
                .map_err(cert_err)?;
            write(&node_dir.join("api.cert"), &api.cert_pem, false)?;
            write(&node_dir.join("api.key"), api.key_pem.as_bytes(), true)?;
            write(&node_dir.join("peer.cert"), &peer.cert_pem, false)?;
            write(&node_dir.join("peer.key"), peer.key_pem.as_bytes(), true)?;
            let d = node_dir.display();
            let members = if id <= initial {
                format!("  members:\n{members}")
            } else {
                String::new()
            };
            let keystore = match &opts.keystore_yaml {
                Some(k) => k.clone(),
                None => format!("  fs:\n    path: {}\n", keystore_dir.display()),
            };
            let config = format!(
                "# Node {id} of a local cluster generated by `kes cluster local`.\n\
                 address: 127.0.0.1:{api_port}\n\
                 admin:\n  identity: {admin}\n\
                 tls:\n  key: {d}/api.key\n  cert: {d}/api.cert\n\
                 cache:\n  expiry:\n    offline: {offline}\n{expiry}\
                 log:\n  audit: off\n\
                 keystore:\n{keystore}\
                 cluster:\n  node_id: {id}\n  address: 127.0.0.1:{peer_port}\n  data_dir: {d}/data\n{members}  tls:\n    key: {d}/peer.key\n    cert: {d}/peer.cert\n    ca: {ca}\n\
                 {extra}",
                admin = api_key.identity(),
                offline = opts.offline,
                expiry = opts.expiry_yaml,
                keystore = keystore,
                ca = dir.join("cluster-ca.cert").display(),
                extra = opts.extra_yaml,
            );
            let config_path = node_dir.join("config.yaml");
            write(&config_path, config, false)?;
            nodes.push(LocalNode {
                id,
                api_port: *api_port,
                peer_port: *peer_port,
                config: config_path,
                data_dir: node_dir.join("data"),
            });
        }
        Ok(Self {
            dir: dir.to_owned(),
            nodes,
            api_key,
            ca_file,
            keystore_dir,
        })
    }

    /// All API endpoints, comma-separated, as `MINIO_KMS_KES_ENDPOINT` wants them.
    pub fn endpoints(&self) -> String {
        self.nodes
            .iter()
            .map(LocalNode::endpoint)
            .collect::<Vec<_>>()
            .join(",")
    }
}
