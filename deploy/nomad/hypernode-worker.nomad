# hypernode-worker on every Nomad client with a GPU: a system job, one allocation per node.
# See docs/fleet.md.
#
# raw_exec runs the worker directly on the host (enable it in the client config:
# plugin "raw_exec" { config { enabled = true } }): the worker is a client of the host's
# containerd, which must open the data directory and run the worker binary as each job
# operation's log writer, both at host paths. Install the binary at
# /usr/local/bin/hypernode-worker on each client (or fetch it with an artifact stanza).

job "hypernode-worker" {
  type        = "system"
  datacenters = ["*"]

  # Only clients tagged for the market (client { meta { hypernode_worker = "true" } }).
  constraint {
    attribute = "${meta.hypernode_worker}"
    value     = "true"
  }
  constraint {
    attribute = "${attr.kernel.name}"
    value     = "linux"
  }

  update {
    max_parallel = 1
    stagger      = "30s"
  }

  group "worker" {
    restart {
      attempts = 10
      interval = "30m"
      delay    = "15s"
      mode     = "delay"
    }

    task "worker" {
      driver = "raw_exec"

      config {
        command = "/usr/local/bin/hypernode-worker"
        args    = ["start", "--env-file", ""]
      }

      # Stopping leaves the market's node queue (unlist_node) before exiting.
      kill_signal  = "SIGTERM"
      kill_timeout = "60s"

      env {
        NETWORK               = "devnet"
        MARKET_PUBKEY         = "REPLACE-with-the-market-public-key"
        IPFS_GATEWAY          = "https://ipfs.io"
        IPFS_UPLOAD_URL       = "http://127.0.0.1:5001"
        HYPERNODE_DATA_DIR    = "/var/lib/hypernode"
        KEYPAIR_PATH          = "/var/lib/hypernode/node-keypair.json"
        CONTAINERD_ADDRESS    = "/run/containerd/containerd.sock"
        HEALTH_CHECK_INTERVAL = "60000"
        DISK_FLOOR_MB         = "20480"
        LOG_FORMAT            = "json"
      }

      resources {
        cpu    = 100
        memory = 128
      }

      logs {
        max_files     = 5
        max_file_size = 20
      }
    }
  }
}
