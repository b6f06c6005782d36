# NixOS module for trustix-p2p: a builder's node, its post-build hook, and a workstation's
# cache proxy.  Import it and set, for a builder:
#
#   services.trustix-p2p.enable = true;
#   services.trustix-p2p.settings.seeds = [ "<key>@peer.example.org:7946" ];
#   services.trustix-p2p.postBuildHook.enable = true;
#
# and for a workstation:
#
#   services.trustix-p2p.cacheProxy.enable = true;
#   services.trustix-p2p.cacheProxy.policy = ./policy.toml;
#   services.trustix-p2p.cacheProxy.publicKey = "trustix-proxy-1:...";   # trustix-p2p nix-keygen
#   services.trustix-p2p.cacheProxy.nixKeyFile = "/var/lib/trustix-p2p-proxy/proxy.nix-key";
{ config, lib, pkgs, ... }:

let
  cfg = config.services.trustix-p2p;
  toml = pkgs.formats.toml { };
  stateDir = "/var/lib/trustix-p2p";
  settings = {
    state_dir = stateDir;
    key_file = "${stateDir}/node.key";
    listen = [ "0.0.0.0:${toString cfg.port}" ];
  } // cfg.settings;
  configFile = toml.generate "trustix-p2p-node.toml" settings;
  hook = pkgs.writeShellScript "trustix-p2p-post-build-hook" ''
    export TRUSTIX_P2P_CONFIG=${configFile}
    exec ${cfg.package}/bin/trustix-p2p-nix-hook
  '';
  hardening = {
    NoNewPrivileges = true;
    CapabilityBoundingSet = "";
    AmbientCapabilities = "";
    ProtectSystem = "strict";
    ProtectHome = true;
    PrivateTmp = true;
    PrivateDevices = true;
    ProtectKernelTunables = true;
    ProtectKernelModules = true;
    ProtectKernelLogs = true;
    ProtectControlGroups = true;
    ProtectClock = true;
    ProtectHostname = true;
    RestrictNamespaces = true;
    RestrictRealtime = true;
    RestrictSUIDSGID = true;
    LockPersonality = true;
    SystemCallArchitectures = "native";
    UMask = "0077";
    Restart = "on-failure";
    RestartSec = 5;
  };
in
{
  options.services.trustix-p2p = {
    enable = lib.mkEnableOption "the trustix-p2p node (a builder's log and its gossip)";

    package = lib.mkOption {
      type = lib.types.package;
      description = "The trustix-p2p package (its bin/ has trustix-p2p and trustix-p2p-nix-hook).";
    };

    port = lib.mkOption {
      type = lib.types.port;
      default = 7946;
      description = "The port the node listens on for peers (Noise over TCP).";
    };

    openFirewall = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = "Open the node's port in the firewall.";
    };

    settings = lib.mkOption {
      type = toml.type;
      default = { };
      description = "Node options (docs/configuration.md), merged over state_dir, key_file and listen.";
    };

    postBuildHook.enable = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = "Log every local build: set nix.settings.post-build-hook to the node's hook.";
    };

    cacheProxy = {
      enable = lib.mkEnableOption "the trustix-p2p cache proxy (a binary cache for trusted paths only)";
      listen = lib.mkOption {
        type = lib.types.str;
        default = "127.0.0.1:8080";
        description = "host:port the proxy serves on.";
      };
      policy = lib.mkOption {
        type = lib.types.path;
        description = "The trust policy (TOML: threshold, builders, nodes or node_socket, upstreams).";
      };
      nixKeyFile = lib.mkOption {
        type = lib.types.str;
        default = "/var/lib/trustix-p2p-proxy/proxy.nix-key";
        description = "The proxy's Nix signing key (trustix-p2p nix-keygen), readable by the proxy only.";
      };
      publicKey = lib.mkOption {
        type = lib.types.str;
        description = "The public half of nixKeyFile, added to nix.settings.trusted-public-keys.";
      };
    };
  };

  config = lib.mkMerge [
    (lib.mkIf cfg.enable {
      users.users.trustix-p2p = {
        isSystemUser = true;
        group = "trustix-p2p";
        home = stateDir;
      };
      users.groups.trustix-p2p = { };

      systemd.services.trustix-p2p = {
        description = "trustix-p2p node";
        wantedBy = [ "multi-user.target" ];
        after = [ "network-online.target" ];
        wants = [ "network-online.target" ];
        preStart = ''
          if [ ! -e ${stateDir}/node.key ]; then
            ${cfg.package}/bin/trustix-p2p keygen ${stateDir}/node.key
          fi
        '';
        serviceConfig = hardening // {
          User = "trustix-p2p";
          Group = "trustix-p2p";
          StateDirectory = "trustix-p2p";
          StateDirectoryMode = "0700";
          ExecStart = "${cfg.package}/bin/trustix-p2p node --config ${configFile}";
          RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" "AF_NETLINK" ];
        };
      };

      networking.firewall.allowedTCPPorts = lib.mkIf cfg.openFirewall [ cfg.port ];
    })

    (lib.mkIf (cfg.enable && cfg.postBuildHook.enable) {
      nix.settings.post-build-hook = "${hook}";
    })

    (lib.mkIf cfg.cacheProxy.enable {
      users.users.trustix-p2p-proxy = {
        isSystemUser = true;
        group = "trustix-p2p-proxy";
      };
      users.groups.trustix-p2p-proxy = { };

      systemd.services.trustix-p2p-cache-proxy = {
        description = "trustix-p2p cache proxy";
        wantedBy = [ "multi-user.target" ];
        after = [ "network-online.target" ] ++ lib.optional cfg.enable "trustix-p2p.service";
        wants = [ "network-online.target" ];
        serviceConfig = hardening // {
          User = "trustix-p2p-proxy";
          Group = "trustix-p2p-proxy";
          StateDirectory = "trustix-p2p-proxy";
          StateDirectoryMode = "0700";
          ExecStart = "${cfg.package}/bin/trustix-p2p cache-proxy --policy ${cfg.cacheProxy.policy} --listen ${cfg.cacheProxy.listen} --nix-key ${cfg.cacheProxy.nixKeyFile} --state-file /var/lib/trustix-p2p-proxy/client-state.json";
          RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" ];
        };
      };

      nix.settings.substituters = [ "http://${cfg.cacheProxy.listen}" ];
      nix.settings.trusted-public-keys = [ cfg.cacheProxy.publicKey ];
    })
  ];
}
