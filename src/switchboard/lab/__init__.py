"""The HA lab: deploy/'s production layout run for real in Linux network namespaces.

``make lab`` (``python -m switchboard.lab up``) builds one namespace per host of the
production layout — ``carrier``, ``router-1``, ``router-2``, ``media-1`` … ``media-4``,
``db-1``, ``db-2``, ``etcd``, ``monitor`` — each with an ``eth0`` on a bridge that lives in a
namespace of its own (``sblab-hub``), so the test subnet 172.28.0.0/24 exists nowhere on the
host. Every service is started the way deploy/ starts it in production (the ExecStart of
its systemd unit, the command of its compose service) from deploy/'s own files; the lab
is the test of deploy/ (docs/operations.md, "The HA lab"). ``make lab-down`` removes
every namespace, link, file and process the lab made.
"""
