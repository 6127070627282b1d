#!/bin/sh
# keepalived vrrp_script: VRRP only sees the network; this checks the service. The router's
# admin API answers {"status": "ok"} while it takes calls and "draining" after SIGTERM, so a
# draining router hands its VIP over before it stops.
exec curl -fsS --max-time 1 http://127.0.0.1:8080/health | grep -q '"ok"'
