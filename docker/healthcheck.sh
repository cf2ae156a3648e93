#!/bin/bash
# The image's HEALTHCHECK: GET /healthz on the metrics listener, healthy on 200.
# The port is CDC_BRIDGE_METRICS_PORT (9464 unless set): set it when the
# configuration's `[metrics] listen` or `--metrics-listen` names another port.
# Plain bash (/dev/tcp), so the runtime image needs no HTTP client.
set -euo pipefail

port=${CDC_BRIDGE_METRICS_PORT:-9464}
exec 3<>"/dev/tcp/127.0.0.1/$port"
printf 'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n' "$port" >&3
IFS= read -r -t 5 status <&3
[[ $status == HTTP/1.[01]\ 200* ]]
