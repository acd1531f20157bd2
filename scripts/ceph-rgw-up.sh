#!/usr/bin/env bash
# Starts a one-node Ceph cluster (monitor, manager, one in-memory OSD) with its S3 gateway
# (RADOS Gateway) on 127.0.0.1:7480, for testing against a real distributed object store.
# usage: ceph-rgw-up.sh [DIR]     stop with: ceph-rgw-down.sh [DIR]
# S3 credentials: access key STRATAKEY, secret STRATASECRET; path-style addressing; any region;
# bucket names of 3+ characters. A second user, STRATAOTHER / STRATAOTHERSECRET, owns nothing of
# the first's (for tests of access denied). Installs the Debian packages it needs when missing (as root).
# (A copy of the services script the project's machines have, kept here so CI needs nothing else.)
set -eu
D=${1:-/tmp/strata-ceph}
# A step that fails says which (several run quietly), rather than ending the script without a word.
trap 'echo "ceph-rgw-up: failed (exit $?) at line $LINENO: $BASH_COMMAND; logs in $D/log" >&2' ERR
if ! command -v radosgw >/dev/null || ! command -v ceph-mon >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    ceph-mon ceph-osd ceph-mgr radosgw ceph-common >/dev/null
fi
if [ -f "$D/run/client.rgw.pid" ] && kill -0 "$(cat "$D/run/client.rgw.pid")" 2>/dev/null; then
  echo "already running: http://127.0.0.1:7480"; exit 0
fi
# Daemons a failed start left behind hold the ports: stopped before their pid files are wiped.
"$(dirname "$0")/ceph-rgw-down.sh" "$D" >/dev/null
mkdir -p "$D"/{mon,osd0,run,log}
FSID=$(cat /proc/sys/kernel/random/uuid)
C="$D/ceph.conf"
cat > "$C" <<CONF
[global]
fsid = $FSID
mon host = v1:127.0.0.1:6789
mon initial members = a
auth cluster required = none
auth service required = none
auth client required = none
auth allow insecure global id reclaim = true
osd pool default size = 1
osd pool default min size = 1
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
run dir = $D/run
log file = $D/log/\$name.log
admin socket = $D/run/\$name.asok
pid file = $D/run/\$name.pid
osd objectstore = memstore
memstore device bytes = 4294967296
osd data = $D/osd0
mon data = $D/mon
[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:7480
rgw dns name = localhost
CONF
monmaptool --create --add a v1:127.0.0.1:6789 --fsid "$FSID" "$D/monmap" >/dev/null
ceph-mon -c "$C" --mkfs -i a --monmap "$D/monmap"
ceph-mon -c "$C" -i a
OSDU=$(cat /proc/sys/kernel/random/uuid)
ceph -c "$C" osd create "$OSDU" >/dev/null
ceph-osd -c "$C" -i 0 --mkfs --osd-uuid "$OSDU" 2>/dev/null
ceph -c "$C" osd crush add osd.0 1.0 root=default >/dev/null 2>&1 || true
# Now and then the OSD asks the monitor before it has the monitor's map, and stops ("wrong fsid" in
# its log, exit 250): it is started again.
osd_up=""
for i in 1 2 3 4 5; do
  if ceph-osd -c "$C" -i 0 2>/dev/null; then osd_up=1; break; fi
  sleep 1
done
[ -n "$osd_up" ] || { echo "ceph-osd did not start; see $D/log" >&2; exit 1; }
ceph-mgr -c "$C" -i x
radosgw -c "$C" -n client.rgw
for i in $(seq 60); do curl -s -o /dev/null http://127.0.0.1:7480 && break; sleep 1; done
curl -s -o /dev/null http://127.0.0.1:7480 || { echo "radosgw did not answer on 127.0.0.1:7480 within 60 s; see $D/log" >&2; exit 1; }
radosgw-admin -c "$C" user create --uid=strata --display-name=strata --access-key=STRATAKEY --secret=STRATASECRET >/dev/null
radosgw-admin -c "$C" user create --uid=other --display-name=other --access-key=STRATAOTHER --secret=STRATAOTHERSECRET >/dev/null
echo "ceph rgw up on http://127.0.0.1:7480 (key STRATAKEY / STRATASECRET); conf $C"
