//! A validator's home folder: `config.toml` (how this node runs), `genesis.json` (the
//! validator set, shared by all), and `keys/` (this validator's ML-DSA-87 key and libp2p
//! identity, mode 0600). RocksDB data lives under `data/`.

use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use weft_crypto::{PublicKey, Signature};
use weft_network::{Address, Libp2pKeypair, PeerSet, ValidatorPeer};

/// Why a home folder cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file is missing.
    #[error("{path} is missing: {hint}")]
    Missing {
        /// The file.
        path: PathBuf,
        /// What to do.
        hint: &'static str,
    },
    /// A file does not parse or has a bad value.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An I/O error.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

fn invalid(path: &Path, reason: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ConfigError + '_ {
    move |source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `config.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This validator's index in the genesis set.
    pub index: u16,
    /// RocksDB folder, relative to the home folder unless absolute.
    pub data_dir: PathBuf,
    /// Peer-to-peer settings.
    pub p2p: P2pConfig,
    /// The gRPC API.
    pub grpc: GrpcConfig,
    /// The Prometheus endpoint.
    pub metrics: ListenConfig,
    /// Mempool settings.
    #[serde(default)]
    pub mempool: MempoolConfig,
    /// Consensus settings a validator may tune.
    #[serde(default)]
    pub consensus: ConsensusConfig,
}

/// `[consensus]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsensusConfig {
    /// Commit certificates kept for lagging peers (sequences). A validator further
    /// behind than half of this, and not catching up, resyncs from peers' logs instead.
    pub decided_retention: u64,
    /// With nothing to order, a validator builds one empty DAG round per this many
    /// milliseconds (a heartbeat that retransmits what a lossy link dropped). A
    /// transaction, or a peer's vertex carrying one, wakes it at once. Each empty round
    /// costs every validator about 5 KB of signed vertex per validator on disk: the
    /// default of 5 minutes keeps an idle validator's data folder growing by about
    /// 0.25 MB an hour at n = 4.
    #[serde(default = "default_idle_heartbeat_ms")]
    pub idle_heartbeat_ms: u64,
}

fn default_idle_heartbeat_ms() -> u64 {
    300_000
}

impl Default for ConsensusConfig {
    fn default() -> ConsensusConfig {
        ConsensusConfig {
            decided_retention: 1_024,
            idle_heartbeat_ms: default_idle_heartbeat_ms(),
        }
    }
}

/// `[p2p]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct P2pConfig {
    /// QUIC listen address, e.g. `/ip4/127.0.0.1/udp/7000/quic-v1`.
    pub listen: String,
    /// Other validators' addresses ending in `/p2p/<peer id>`; one is enough.
    pub bootstrap: Vec<String>,
}

/// `[grpc]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcConfig {
    /// e.g. `127.0.0.1:50051`.
    pub listen: SocketAddr,
    /// TLS for the client API (rustls); plaintext when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
}

/// `[grpc.tls]`: PEM files, relative to the home folder unless absolute.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The server's certificate chain.
    pub cert: PathBuf,
    /// The server's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by one of these CAs
    /// (mutual TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
}

/// A TCP listen address.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    /// e.g. `127.0.0.1:50051`.
    pub listen: SocketAddr,
}

/// `[mempool]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MempoolConfig {
    /// Transactions waiting for a vertex, at most.
    pub max_transactions: usize,
}

impl Default for MempoolConfig {
    fn default() -> MempoolConfig {
        MempoolConfig {
            max_transactions: 100_000,
        }
    }
}

/// One validator in `genesis.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisValidator {
    /// Its index.
    pub index: u16,
    /// ML-DSA-87 public key, hex.
    pub public_key: String,
    /// libp2p peer id.
    pub peer_id: String,
    /// ML-DSA-87 signature binding the peer id to the index (see `weft_network::peers`), hex.
    pub peer_binding: String,
    /// Where it listens for peers (informational; discovery finds the rest).
    pub p2p_address: String,
}

/// `genesis.json`: the chain and its validator set.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    /// The chain id every signature names.
    pub chain_id: String,
    /// The validator-set epoch.
    pub epoch: u64,
    /// The validators, by index.
    pub validators: Vec<GenesisValidator>,
}

/// A genesis file checked and turned into what the node runs with.
#[derive(Debug, Clone)]
pub struct CheckedGenesis {
    /// As written.
    pub genesis: Genesis,
    /// The consensus committee.
    pub committee: weft_dag::Committee,
    /// The verified peer bindings.
    pub peers: PeerSet,
}

impl Genesis {
    /// Reads and checks `genesis.json`: keys decode, bindings verify, the set is a
    /// valid committee.
    pub fn load(path: &Path) -> Result<CheckedGenesis, ConfigError> {
        let text = fs::read_to_string(path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => ConfigError::Missing {
                path: path.to_path_buf(),
                hint: "copy the network's genesis.json into the home folder (weft testnet writes one)",
            },
            _ => ConfigError::Io {
                path: path.to_path_buf(),
                source,
            },
        })?;
        let genesis: Genesis = serde_json::from_str(&text).map_err(|e| invalid(path, e))?;
        genesis.check().map_err(|reason| invalid(path, reason))
    }

    /// Checks the set and builds the committee and peer set.
    pub fn check(self) -> Result<CheckedGenesis, String> {
        let chain_id = weft_dag::ChainId::new(&self.chain_id).map_err(|e| e.to_string())?;
        let mut public_keys = Vec::new();
        let mut peers = Vec::new();
        for (position, validator) in self.validators.iter().enumerate() {
            if usize::from(validator.index) != position {
                return Err(format!(
                    "validators must be listed by index from 0; found {} at position {position}",
                    validator.index
                ));
            }
            let public_key = PublicKey::from_hex(&validator.public_key)
                .map_err(|e| format!("validator {}: public key: {e}", validator.index))?;
            let peer_id = validator
                .peer_id
                .parse()
                .map_err(|e| format!("validator {}: peer id: {e}", validator.index))?;
            let binding = hex::decode(&validator.peer_binding)
                .map_err(|e| e.to_string())
                .and_then(|bytes| Signature::from_bytes(&bytes).map_err(|e| e.to_string()))
                .map_err(|e| format!("validator {}: peer binding: {e}", validator.index))?;
            public_keys.push(public_key);
            peers.push(ValidatorPeer {
                index: validator.index,
                public_key,
                peer_id,
                binding,
            });
        }
        let committee =
            weft_dag::Committee::new(chain_id, weft_dag::Epoch(self.epoch), public_keys)
                .map_err(|e| e.to_string())?;
        let peers = PeerSet::new(self.chain_id.as_bytes(), &peers).map_err(|e| e.to_string())?;
        Ok(CheckedGenesis {
            genesis: self,
            committee,
            peers,
        })
    }
}

/// The files of a home folder.
#[derive(Debug, Clone)]
pub struct Home {
    /// The folder.
    pub root: PathBuf,
}

impl Home {
    /// The home folder at `root`.
    pub fn new(root: &Path) -> Home {
        Home {
            root: root.to_path_buf(),
        }
    }

    /// `config.toml`.
    pub fn config_path(&self) -> PathBuf {
        self.root.join("config.toml")
    }

    /// `genesis.json`.
    pub fn genesis_path(&self) -> PathBuf {
        self.root.join("genesis.json")
    }

    /// `keys/validator.key`: the ML-DSA-87 key.
    pub fn validator_key_path(&self) -> PathBuf {
        self.root.join("keys").join("validator.key")
    }

    /// `keys/validator.started`: written (and synced) before this validator's key first
    /// signs. Without it an empty data folder is a fresh validator; with it, an empty data
    /// folder was wiped and the replica learns where it may sign from its peers.
    pub fn signing_marker_path(&self) -> PathBuf {
        self.root.join("keys").join("validator.started")
    }

    /// `keys/p2p.key`: the libp2p identity.
    pub fn p2p_key_path(&self) -> PathBuf {
        self.root.join("keys").join("p2p.key")
    }

    /// The RocksDB folder.
    pub fn data_dir(&self, config: &NodeConfig) -> PathBuf {
        self.resolve(&config.data_dir)
    }

    /// A path from `config.toml`: relative to the home folder unless absolute.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.root.join(path)
        }
    }

    /// Reads and checks `config.toml`.
    pub fn load_config(&self) -> Result<NodeConfig, ConfigError> {
        let path = self.config_path();
        let text = fs::read_to_string(&path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => ConfigError::Missing {
                path: path.clone(),
                hint: "run `weft init --home DIR` or `weft testnet` to create a home folder",
            },
            _ => ConfigError::Io {
                path: path.clone(),
                source,
            },
        })?;
        let config: NodeConfig = toml::from_str(&text).map_err(|e| invalid(&path, e))?;
        config
            .p2p
            .listen
            .parse::<Address>()
            .map_err(|e| invalid(&path, format!("p2p.listen: {e}")))?;
        for address in &config.p2p.bootstrap {
            address
                .parse::<Address>()
                .map_err(|e| invalid(&path, format!("p2p.bootstrap {address}: {e}")))?;
        }
        Ok(config)
    }

    /// Reads the ML-DSA-87 key; refuses to run without it.
    pub fn load_validator_key(&self) -> Result<weft_crypto::Keypair, ConfigError> {
        let path = self.validator_key_path();
        if !path.exists() {
            return Err(ConfigError::Missing {
                path,
                hint: "this node has no validator key; run `weft keys generate --home DIR` (keys are never generated silently)",
            });
        }
        weft_crypto::key_file::read(&path).map_err(|e| invalid(&path, e))
    }

    /// Reads the libp2p identity; refuses to run without it.
    pub fn load_p2p_key(&self) -> Result<Libp2pKeypair, ConfigError> {
        let path = self.p2p_key_path();
        if !path.exists() {
            return Err(ConfigError::Missing {
                path,
                hint: "this node has no p2p key; run `weft keys generate --home DIR`",
            });
        }
        let mode = fs::metadata(&path)
            .map_err(io_error(&path))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(invalid(
                &path,
                format!(
                    "mode {:o} lets others read the key; run chmod 600",
                    mode & 0o777
                ),
            ));
        }
        let text = fs::read_to_string(&path).map_err(io_error(&path))?;
        let bytes = hex::decode(text.trim()).map_err(|e| invalid(&path, e))?;
        Libp2pKeypair::from_protobuf_encoding(&bytes).map_err(|e| invalid(&path, e))
    }
}

/// Writes a libp2p identity, mode 0600, refusing to overwrite.
pub fn write_p2p_key(path: &Path, keypair: &Libp2pKeypair) -> Result<(), ConfigError> {
    let bytes = keypair
        .to_protobuf_encoding()
        .map_err(|e| invalid(path, e))?;
    write_private(path, hex::encode(bytes).as_bytes())
}

/// Creates `path` with mode 0600 (never overwriting) and syncs it.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), ConfigError> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io_error(parent))?;
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_error(path))?;
    file.write_all(contents).map_err(io_error(path))?;
    file.sync_all().map_err(io_error(path))
}

/// Writes a public file (config, genesis), refusing to overwrite.
pub fn write_public(path: &Path, contents: &str) -> Result<(), ConfigError> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io_error(parent))?;
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io_error(path))?;
    file.write_all(contents.as_bytes())
        .map_err(io_error(path))?;
    file.sync_all().map_err(io_error(path))
}
