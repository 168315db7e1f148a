//! `weft testnet` and `weft keys generate`: home folders for a local validator set.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use weft_network::{sign_binding, Libp2pKeypair};

use crate::config::{
    write_p2p_key, write_public, ConfigError, ConsensusConfig, Genesis, GenesisValidator,
    GrpcConfig, Home, ListenConfig, MempoolConfig, NodeConfig, P2pConfig,
};

/// What `weft testnet` writes.
#[derive(Debug, Clone)]
pub struct TestnetOptions {
    /// How many validators (at least 4).
    pub validators: u16,
    /// The folder that gets `node0 .. node{N-1}`.
    pub out: PathBuf,
    /// Node i's QUIC port is this + i.
    pub p2p_base_port: u16,
    /// Node i's gRPC port is this + i.
    pub grpc_base_port: u16,
    /// Node i's metrics port is this + i.
    pub metrics_base_port: u16,
    /// The host every node listens on.
    pub host: String,
    /// The chain id.
    pub chain_id: String,
}

fn port(base: u16, index: u16) -> Result<u16, ConfigError> {
    base.checked_add(index).ok_or_else(|| ConfigError::Invalid {
        path: PathBuf::from("--*-base-port"),
        reason: format!("base port {base} + {index} exceeds 65535"),
    })
}

/// Generates keys and writes one home folder per validator with the shared genesis.
/// Refuses to overwrite anything.
pub fn write_testnet(options: &TestnetOptions) -> Result<Vec<PathBuf>, ConfigError> {
    if options.validators < 4 {
        return Err(ConfigError::Invalid {
            path: options.out.clone(),
            reason: format!(
                "{} validators tolerate no fault; use at least 4 (n = 3f + 1)",
                options.validators
            ),
        });
    }
    let mut validator_keys = Vec::new();
    let mut p2p_keys = Vec::new();
    let mut genesis_validators = Vec::new();
    for index in 0..options.validators {
        let keys = weft_crypto::Keypair::generate();
        let p2p = Libp2pKeypair::generate_ed25519();
        let peer_id = p2p.public().to_peer_id();
        let binding = sign_binding(&keys.secret, options.chain_id.as_bytes(), index, &peer_id);
        genesis_validators.push(GenesisValidator {
            index,
            public_key: keys.public.to_hex(),
            peer_id: peer_id.to_string(),
            peer_binding: hex::encode(binding.as_bytes()),
            p2p_address: format!(
                "/ip4/{}/udp/{}/quic-v1/p2p/{peer_id}",
                options.host,
                port(options.p2p_base_port, index)?
            ),
        });
        validator_keys.push(keys);
        p2p_keys.push(p2p);
    }
    let genesis = Genesis {
        chain_id: options.chain_id.clone(),
        epoch: 0,
        validators: genesis_validators,
    };
    // Check what we wrote the way `weft run` will.
    genesis
        .clone()
        .check()
        .map_err(|reason| ConfigError::Invalid {
            path: options.out.clone(),
            reason,
        })?;
    let genesis_json =
        serde_json::to_string_pretty(&genesis).map_err(|e| ConfigError::Invalid {
            path: options.out.clone(),
            reason: e.to_string(),
        })?;
    let mut homes = Vec::new();
    for index in 0..options.validators {
        let home = Home::new(&options.out.join(format!("node{index}")));
        // Each node is told one other validator; discovery finds the rest.
        let bootstrap_index: usize = if index == 0 { 1 } else { 0 };
        let config = NodeConfig {
            index,
            data_dir: PathBuf::from("data"),
            p2p: P2pConfig {
                listen: format!(
                    "/ip4/{}/udp/{}/quic-v1",
                    options.host,
                    port(options.p2p_base_port, index)?
                ),
                bootstrap: vec![genesis.validators[bootstrap_index].p2p_address.clone()],
            },
            grpc: GrpcConfig {
                listen: format!("{}:{}", options.host, port(options.grpc_base_port, index)?)
                    .parse()
                    .map_err(|e: std::net::AddrParseError| ConfigError::Invalid {
                        path: home.config_path(),
                        reason: e.to_string(),
                    })?,
                tls: None,
            },
            metrics: ListenConfig {
                listen: format!(
                    "{}:{}",
                    options.host,
                    port(options.metrics_base_port, index)?
                )
                .parse()
                .map_err(|e: std::net::AddrParseError| ConfigError::Invalid {
                    path: home.config_path(),
                    reason: e.to_string(),
                })?,
            },
            mempool: MempoolConfig::default(),
            consensus: ConsensusConfig::default(),
        };
        let toml = toml::to_string_pretty(&config).map_err(|e| ConfigError::Invalid {
            path: home.config_path(),
            reason: e.to_string(),
        })?;
        write_public(&home.config_path(), &config_header(index, &toml))?;
        write_public(&home.genesis_path(), &genesis_json)?;
        write_validator_key(&home, &validator_keys[usize::from(index)])?;
        write_p2p_key(&home.p2p_key_path(), &p2p_keys[usize::from(index)])?;
        homes.push(home.root);
    }
    Ok(homes)
}

fn config_header(index: u16, body: &str) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "# weft validator {index}: how this node runs.");
    let _ = writeln!(
        text,
        "# The validator set is in genesis.json, the keys in keys/ (mode 0600)."
    );
    text.push_str(body);
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

/// Writes an ML-DSA-87 key file (mode 0600, never overwriting).
pub fn write_validator_key(home: &Home, keys: &weft_crypto::Keypair) -> Result<(), ConfigError> {
    let path = home.validator_key_path();
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| ConfigError::Io {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    weft_crypto::key_file::write(&path, keys).map_err(|e| ConfigError::Invalid {
        path: path.clone(),
        reason: e.to_string(),
    })
}

/// `weft keys generate`: a fresh ML-DSA-87 key and libp2p identity in `home/keys`.
pub fn generate_keys(home: &Path) -> Result<(weft_crypto::PublicKey, String), ConfigError> {
    let home = Home::new(home);
    let keys = weft_crypto::Keypair::generate();
    let p2p = Libp2pKeypair::generate_ed25519();
    write_validator_key(&home, &keys)?;
    write_p2p_key(&home.p2p_key_path(), &p2p)?;
    Ok((keys.public, p2p.public().to_peer_id().to_string()))
}

/// What `weft init` writes (its command-line flags).
#[derive(Debug, Clone, clap::Args)]
pub struct InitOptions {
    /// The home folder to create (default `$WEFT_HOME`).
    #[arg(long, env = "WEFT_HOME")]
    pub home: PathBuf,
    /// This validator's index in the set.
    #[arg(long)]
    pub index: u16,
    /// The chain id every signature names (the peer binding includes it).
    #[arg(long)]
    pub chain_id: String,
    /// QUIC listen address (multiaddr).
    #[arg(long, default_value = "/ip4/0.0.0.0/udp/7000/quic-v1")]
    pub p2p_listen: String,
    /// The address other validators reach this one at (multiaddr, without /p2p/).
    #[arg(long)]
    pub p2p_external: String,
    /// gRPC listen address.
    #[arg(long, default_value = "0.0.0.0:50051")]
    pub grpc_listen: std::net::SocketAddr,
    /// Metrics listen address.
    #[arg(long, default_value = "0.0.0.0:26660")]
    pub metrics_listen: std::net::SocketAddr,
    /// Other validators' full addresses (ending in /p2p/<peer id>); one is enough.
    #[arg(long, value_delimiter = ',')]
    pub bootstrap: Vec<String>,
}

/// The file `weft init` writes next to config.toml: this validator's genesis entry.
pub const GENESIS_ENTRY_FILE: &str = "validator.json";

/// `weft init`: keys, config.toml and the genesis entry for one validator of a set that
/// is assembled elsewhere (`weft genesis`). Refuses to overwrite anything. Returns the
/// path of the genesis entry.
pub fn init(options: &InitOptions) -> Result<PathBuf, ConfigError> {
    let home = Home::new(&options.home);
    let invalid = |reason: String| ConfigError::Invalid {
        path: options.home.clone(),
        reason,
    };
    if options.p2p_external.contains("/p2p/") {
        return Err(invalid(
            "--p2p-external must not end in /p2p/<peer id>: init appends this node's".into(),
        ));
    }
    weft_dag::ChainId::new(&options.chain_id).map_err(|e| invalid(e.to_string()))?;
    for address in std::iter::once(&options.p2p_listen)
        .chain(std::iter::once(&options.p2p_external))
        .chain(&options.bootstrap)
    {
        address
            .parse::<weft_network::Address>()
            .map_err(|e| invalid(format!("{address:?} is not a multiaddr: {e}")))?;
    }
    for path in [home.config_path(), home.genesis_path()] {
        if path.exists() {
            return Err(ConfigError::Invalid {
                path,
                reason: "already exists; init never overwrites a home folder".into(),
            });
        }
    }
    let keys = weft_crypto::Keypair::generate();
    let p2p = Libp2pKeypair::generate_ed25519();
    let peer_id = p2p.public().to_peer_id();
    let binding = sign_binding(
        &keys.secret,
        options.chain_id.as_bytes(),
        options.index,
        &peer_id,
    );
    let entry = GenesisValidator {
        index: options.index,
        public_key: keys.public.to_hex(),
        peer_id: peer_id.to_string(),
        peer_binding: hex::encode(binding.as_bytes()),
        p2p_address: format!("{}/p2p/{peer_id}", options.p2p_external),
    };
    let config = NodeConfig {
        index: options.index,
        data_dir: PathBuf::from("data"),
        p2p: P2pConfig {
            listen: options.p2p_listen.clone(),
            bootstrap: options.bootstrap.clone(),
        },
        grpc: GrpcConfig {
            listen: options.grpc_listen,
            tls: None,
        },
        metrics: ListenConfig {
            listen: options.metrics_listen,
        },
        mempool: MempoolConfig::default(),
        consensus: ConsensusConfig::default(),
    };
    let toml = toml::to_string_pretty(&config).map_err(|e| invalid(e.to_string()))?;
    // Keys first: they refuse to overwrite, so a half-initialized home is never reused.
    write_validator_key(&home, &keys)?;
    write_p2p_key(&home.p2p_key_path(), &p2p)?;
    write_public(&home.config_path(), &config_header(options.index, &toml))?;
    let entry_path = home.root.join(GENESIS_ENTRY_FILE);
    let json = serde_json::to_string_pretty(&entry).map_err(|e| invalid(e.to_string()))?;
    write_public(&entry_path, &json)?;
    Ok(entry_path)
}

/// `weft genesis`: reads the validators' entries, checks the set as `weft run` will
/// (bindings, indexes 0..n, n >= 4) and writes genesis.json. Returns the set's size.
pub fn assemble_genesis(
    chain_id: &str,
    entries: &[PathBuf],
    out: &Path,
) -> Result<usize, ConfigError> {
    let mut validators = Vec::new();
    for path in entries {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.clone(),
            source,
        })?;
        let entry: GenesisValidator =
            serde_json::from_str(&text).map_err(|e| ConfigError::Invalid {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        validators.push(entry);
    }
    validators.sort_by_key(|v| v.index);
    let genesis = Genesis {
        chain_id: chain_id.to_owned(),
        epoch: 0,
        validators,
    };
    let count = genesis.validators.len();
    genesis
        .clone()
        .check()
        .map_err(|reason| ConfigError::Invalid {
            path: out.to_path_buf(),
            reason,
        })?;
    let json = serde_json::to_string_pretty(&genesis).map_err(|e| ConfigError::Invalid {
        path: out.to_path_buf(),
        reason: e.to_string(),
    })?;
    write_public(out, &json)?;
    Ok(count)
}
