#!/usr/bin/env bash
# make demo: run meshmetrics with its built-in defaults on free local ports, play Mixer
# against it with mockmixer and the analyticprom samples (some requests match the rule,
# some do not), print the istio_analytic_requests series from /metrics, and stop it.
# Exits non-zero unless the series add up to exactly the number of matching requests.
#
# make demo-mixerless (demo.sh mixerless): the same rule without Mixer. meshmetrics runs
# with the samples as its --config-dir, and mockmixer plays Envoy, streaming the access-log
# entries of testdata/accesslog/analytic.yaml.
#
# Needs only Go (curl or wget are used when present; bash's /dev/tcp otherwise).
set -euo pipefail
mode=${1:-mixer}
case $mode in
mixer | mixerless) ;;
*)
	echo "usage: $0 [mixer|mixerless]" >&2
	exit 2
	;;
esac

cd "$(dirname "$0")/../.."
GO=${GO:-go}
SAMPLES=deploy/kubernetes/samples
BAGS=testdata/attributes/analytic.yaml
ENTRIES=testdata/accesslog/analytic.yaml

work=$(mktemp -d)
adapter_pid=
cleanup() {
	if [[ -n $adapter_pid ]] && kill -0 "$adapter_pid" 2>/dev/null; then
		kill -TERM "$adapter_pid" 2>/dev/null || true
		wait "$adapter_pid" 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "building meshmetrics and mockmixer"
"$GO" build -o "$work/meshmetrics" ./cmd/meshmetrics
"$GO" build -o "$work/mockmixer" ./cmd/mockmixer

flags=()
if [[ $mode == mixerless ]]; then
	# The config directory holds only the user's instance, rule and handler: the
	# meshmetrics adapter, the metric template and Istio's attribute manifests are built in.
	mkdir "$work/rules"
	cp "$SAMPLES/analyticcounter.yaml" "$SAMPLES/analyticprom-prometheus.yaml" "$work/rules/"
	flags=(--config-dir "$work/rules")
	step "starting meshmetrics without Mixer: --config-dir with $SAMPLES/analyticcounter.yaml and analyticprom-prometheus.yaml"
else
	step "starting meshmetrics (built-in sinks: Prometheus exposition on /metrics)"
fi
# Port 0: the kernel picks free ports, which the adapter logs.
"$work/meshmetrics" --grpc-address 127.0.0.1:0 --http-address 127.0.0.1:0 --replica demo "${flags[@]}" >"$work/adapter.log" 2>&1 &
adapter_pid=$!
grpc= http=
for _ in $(seq 100); do
	line=$(grep -m1 'meshmetrics serving' "$work/adapter.log" || true)
	if [[ -n $line ]]; then
		grpc=$(sed -E 's/.*grpc="?([^" ]+)"?.*/\1/' <<<"$line")
		http=$(sed -E 's/.*http="?([^" ]+)"?.*/\1/' <<<"$line")
		break
	fi
	if ! kill -0 "$adapter_pid" 2>/dev/null; then
		echo "meshmetrics exited:" >&2
		cat "$work/adapter.log" >&2
		exit 1
	fi
	sleep 0.1
done
if [[ -z $grpc || -z $http ]]; then
	echo "meshmetrics did not start within 10s:" >&2
	cat "$work/adapter.log" >&2
	exit 1
fi
echo "gRPC on $grpc, /metrics on http://$http/metrics"

if [[ $mode == mixerless ]]; then
	step "mockmixer accesslog: the entries of $ENTRIES on one stream, as Envoy's gRPC access logger sends them"
	"$work/mockmixer" accesslog --address "$grpc" --metrics-url "http://$http/metrics" --entries "$ENTRIES" | tee "$work/report.out"
	# What should be counted, worked out from the inputs: the entries whose path starts
	# with /v1/damage?analytic=, each as many times as its repeat says.
	expected=$(awk '
		function flush() { if (analytic) n += repeat; analytic = 0; repeat = 1 }
		/^- / { flush() }
		/^[- ] *path: \/v1\/damage\?analytic=/ { analytic = 1 }
		/^ *repeat: / { repeat = $2 }
		END { flush(); printf "%d", n }' "$ENTRIES")
else
	config=(-f deploy/kubernetes/adapter.yaml -f deploy/kubernetes/template-metric.yaml
		-f "$SAMPLES/analyticcounter.yaml" -f "$SAMPLES/analyticprom-prometheus.yaml")

	step "mockmixer report: the bags of $BAGS, one report each"
	"$work/mockmixer" report "${config[@]}" --address "$grpc" --metrics-url "http://$http/metrics" --attributes-file "$BAGS" | tee "$work/report.out"

	step "mockmixer report: mixc-style flags, a matching request sent twice, then one that does not match"
	"$work/mockmixer" report "${config[@]}" --address "$grpc" --metrics-url "http://$http/metrics" -r 2 \
		-s 'request.path=/v1/damage?analytic=cli,request.method=DELETE,destination.service.name=damage' -i response.code=204 |
		tee -a "$work/report.out"
	"$work/mockmixer" report "${config[@]}" --address "$grpc" --metrics-url "http://$http/metrics" \
		-s 'request.path=/v1/damage,request.method=GET' -i response.code=200 | tee -a "$work/report.out"

	# What should be counted, worked out from the inputs rather than from mockmixer's output:
	# the bags whose request.path starts with /v1/damage?analytic=, and the two flag requests.
	from_file=$(grep -cE '^[- ] *request\.path: /v1/damage\?analytic=' "$BAGS")
	expected=$((from_file + 2))
fi

fetch() {
	if command -v curl >/dev/null; then
		curl -fsS "http://$http$1"
	elif command -v wget >/dev/null; then
		wget -qO- "http://$http$1"
	else
		local host=${http%:*} port=${http##*:}
		exec 3<>"/dev/tcp/$host/$port"
		printf 'GET %s HTTP/1.0\r\nHost: %s\r\nAccept: text/plain\r\n\r\n' "$1" "$http" >&3
		sed '1,/^\r$/d' <&3
		exec 3<&-
	fi
}

step "the analyticcounter series on /metrics (istio_analytic_requests)"
# HandleMetric returns once the instances are queued for the sink: give the queue a moment
# (up to 5s) to reach the expected count; more than expected shows at once.
got=0
for _ in $(seq 50); do
	fetch /metrics >"$work/metrics.txt"
	got=$(awk '/^istio_analytic_requests[{ ]/ { sum += $NF } END { printf "%d", sum }' "$work/metrics.txt")
	[[ $got -ge $expected ]] && break
	sleep 0.1
done
grep -E '^(# (HELP|TYPE) )?istio_analytic_requests' "$work/metrics.txt" || true

step "stopping meshmetrics"
kill -TERM "$adapter_pid"
wait "$adapter_pid" || { echo "meshmetrics did not stop cleanly:" >&2; cat "$work/adapter.log" >&2; exit 1; }
adapter_pid=
tail -n 2 "$work/adapter.log"

echo
if [[ $got -ne $expected ]]; then
	echo "FAIL: the series count $got; $expected matched the rule analyticprom" >&2
	exit 1
fi
what=requests
[[ $mode == mixerless ]] && what="access-log entries"
echo "OK: istio_analytic_requests counts $got $what, exactly the $expected that matched analyticprom (match(request.path, \"/v1/damage?analytic=*\"))."
