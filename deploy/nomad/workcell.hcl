# workcell on Nomad (Docker task driver): API replicas (`workcell serve --no-worker`) and workers (`workcell worker`)
# on one Postgres and one shared data volume: `nomad job run deploy/nomad/workcell.hcl`.
# Secrets (the database URL with its password, model keys) come from Nomad Variables at nomad/jobs/workcell, read by
# the template blocks; set them with `nomad var put nomad/jobs/workcell database_url=... anthropic_api_key=...`.
# Needs: the server image on every client (deploy/image/build.ts), a host volume `workcell-data` on each client that
# is one shared file system with POSIX locks across clients (not NFS), and the Docker driver with
# `allow_caps` including the worker's capabilities below. Postgres is external (a managed or your own instance).

variable "image" {
  type        = string
  default     = "workcell-server:0.1.0"
  description = "the server image, built by deploy/image/build.ts and pushed where the clients pull from"
}

variable "api_count" {
  type    = number
  default = 2
}

variable "worker_count" {
  type    = number
  default = 2
}

variable "public_url" {
  type        = string
  default     = "https://workcell.example.com"
  description = "the URL clients use (WORKCELL_PUBLIC_URL); the API answers no other Host"
}

# API replicas check a job's model when it is scheduled, workers call it: both get the provider keys.
locals {
  secrets = <<-EOT
    {{ with nomadVar "nomad/jobs/workcell" }}
    WORKCELL_DATABASE_URL={{ .database_url }}
    WORKCELL_MODEL={{ .model }}
    ANTHROPIC_API_KEY={{ .anthropic_api_key }}
    OPENAI_API_KEY={{ .openai_api_key }}
    {{ end }}
  EOT
}

job "workcell" {
  type = "service"

  group "api" {
    count = var.api_count

    network {
      port "http" {
        to = 8080
      }
    }

    volume "data" {
      type      = "host"
      source    = "workcell-data"
      read_only = false
    }

    service {
      name     = "workcell-api"
      port     = "http"
      provider = "nomad"

      check {
        type     = "http"
        path     = "/healthz"
        interval = "10s"
        timeout  = "5s"
      }
    }

    task "api" {
      driver = "docker"

      config {
        image    = var.image
        args     = ["serve", "--no-worker"]
        ports    = ["http"]
        # An API replica runs no sandbox: root only to read and write the job files workers own.
        cap_drop = ["all"]
        cap_add  = ["chown", "dac_override", "fowner"]
        security_opt = ["no-new-privileges:true"]
      }

      volume_mount {
        volume      = "data"
        destination = "/var/lib/workcell/data"
      }

      env {
        WORKCELL_HOST       = "0.0.0.0"
        WORKCELL_PORT       = "8080"
        WORKCELL_PUBLIC_URL = var.public_url
        WORKCELL_DATA_DIR   = "/var/lib/workcell/data"
      }

      template {
        destination = "secrets/workcell.env"
        env         = true
        data        = local.secrets
      }

      resources {
        cpu    = 500
        memory = 512
      }
    }
  }

  group "worker" {
    count = var.worker_count

    network {
      port "internal" {
        to = 8081
      }
    }

    volume "data" {
      type      = "host"
      source    = "workcell-data"
      read_only = false
    }

    service {
      name     = "workcell-worker"
      port     = "internal"
      provider = "nomad"

      check {
        type     = "http"
        path     = "/healthz"
        interval = "10s"
        timeout  = "5s"
      }
    }

    task "worker" {
      driver       = "docker"
      kill_timeout = "60s"

      config {
        image = var.image
        args  = ["worker"]
        ports = ["internal"]
        # Exactly what bwrap sandboxes need in a container (deploy/README.md, "Privileges"); not privileged.
        # SYS_ADMIN: mounts (tmpfs workspaces, the writable cgroup tree, a procfs for sandboxes' pid namespaces);
        # SETUID, SETGID, SETPCAP: setpriv to the sandbox user; CHOWN, DAC_OVERRIDE, FOWNER: the workspaces and
        # sockets it hands over and takes back (cp -a); KILL: sandbox processes of another user. AppArmor's docker-default denies mounts;
        # Docker's default seccomp profile refuses pivot_root (sandboxes still get workcell's own seccomp filter).
        cap_drop     = ["all"]
        cap_add      = ["sys_admin", "setuid", "setgid", "setpcap", "chown", "dac_override", "fowner", "kill"]
        security_opt = ["apparmor=unconfined", "seccomp=unconfined", "no-new-privileges:true"]
      }

      volume_mount {
        volume      = "data"
        destination = "/var/lib/workcell/data"
      }

      env {
        # The internal route listens in the container; API replicas reach it at the client's address and mapped port.
        WORKCELL_INTERNAL_HOST = "0.0.0.0"
        WORKCELL_INTERNAL_PORT = "8081"
        WORKCELL_INTERNAL_URL  = "http://${NOMAD_ADDR_internal}"
        WORKCELL_DATA_DIR      = "/var/lib/workcell/data"
        WORKCELL_CONCURRENCY   = "2"
        WORKCELL_RUNTIME_ORDER = "bwrap"
        WORKCELL_DISK_LIMIT    = "tmpfs"
      }

      template {
        destination = "secrets/workcell.env"
        env         = true
        data        = local.secrets
      }

      resources {
        cpu    = 4000
        memory = 8192
      }
    }
  }
}
