#!/usr/bin/env bash
# init-net against the real kernel: applies and cleans the redirect rules inside throwaway network
# namespaces, once per installed iptables variant (nft, legacy), and checks what iptables-save
# shows: one PREROUTING jump however often apply runs, convergence after a partial install, other
# tools' rules untouched, clean removing everything of ours and harmless when repeated, exit code 3
# without root. Nothing outside the namespaces is touched; no address besides loopback is used.
#
# usage (as root): test/e2e/initnet_netns.sh [path/to/initnet_tool]
#   default tool: $INITNET_TOOL, else the newest build*/test/unit/initnet/initnet_tool
# exit status: 0 passed, 1 failed, 77 cannot run here (not root, no netns support, no iptables)
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
tool=${1:-${INITNET_TOOL:-}}
if [ -z "$tool" ]; then
  for candidate in "$repo"/build*/test/unit/initnet/initnet_tool; do
    if [ -x "$candidate" ] && { [ -z "$tool" ] || [ "$candidate" -nt "$tool" ]; }; then
      tool=$candidate
    fi
  done
fi
skip() { echo "initnet_netns: SKIP: $*" >&2; exit 77; }
if [ -z "$tool" ] || [ ! -x "$tool" ]; then
  skip "initnet_tool not found (build target initnet_tool)"
fi
tool=$(cd "$(dirname "$tool")" && pwd)/$(basename "$tool")
[ "$(id -u)" = 0 ] || skip "needs root (network namespaces, iptables)"
command -v ip >/dev/null || skip "needs ip (iproute2)"

namespaces=()
cleanup() {
  for ns in "${namespaces[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 1' INT TERM

failures=0
pass() { echo "  ok   $*"; }
fail() { echo "  FAIL $*" >&2; failures=$((failures + 1)); }
expect_eq() {  # description actual expected
  if [ "$2" == "$3" ]; then pass "$1"; else
    fail "$1"; diff <(printf '%s\n' "$3") <(printf '%s\n' "$2") | sed 's/^/         /' >&2 || true
  fi
}
expect_rc() {  # description actual expected
  if [ "$2" = "$3" ]; then pass "$1"; else fail "$1 (exit status $2, expected $3)"; fi
}

# Creates a namespace with loopback up and names it in $ns (no subshell: the trap must know it).
new_netns() {
  ns="sidecar-it-$$-$1"
  ip netns add "$ns" || return 1
  namespaces+=("$ns")
  ip netns exec "$ns" ip link set lo up
}

# The config under test, as initnet_tool flags.
flags=(--port 80 --to 8080 --port 8443 --to 9443 --name api --listen-host ::
       --admin-port 9901 --exclude-port 22 --exclude-cidr 10.0.0.0/8 --exclude-cidr fd00::/8)
jump='-A PREROUTING -p tcp -m comment --comment "sidecar: inbound capture" -j SIDECAR_INBOUND'
chain_head='-A SIDECAR_INBOUND -i lo -m comment --comment "sidecar: loopback is never redirected" -j RETURN
-A SIDECAR_INBOUND -p tcp -m tcp --dport 9901 -m comment --comment "sidecar: exclude admin port" -j RETURN
-A SIDECAR_INBOUND -p tcp -m tcp --dport 22 -m comment --comment "sidecar: exclude port 22" -j RETURN'
chain_tail='-A SIDECAR_INBOUND -p tcp -m tcp --dport 80 -m comment --comment "sidecar: port 80 -> listener web" -j REDIRECT --to-ports 8080
-A SIDECAR_INBOUND -p tcp -m tcp --dport 8443 -m comment --comment "sidecar: port 8443 -> listener api" -j REDIRECT --to-ports 9443'
expected_chain4="$chain_head
-A SIDECAR_INBOUND -s 10.0.0.0/8 -m comment --comment \"sidecar: exclude source 10.0.0.0/8\" -j RETURN
$chain_tail"
expected_chain6="$chain_head
-A SIDECAR_INBOUND -s fd00::/8 -m comment --comment \"sidecar: exclude source fd00::/8\" -j RETURN
$chain_tail"

# The nat table as "name policy" declarations and rules, without counters or comments. (stderr
# only ever says that the other variant has tables too; a failing save fails the comparisons.)
nat() {  # ns save-tool
  ip netns exec "$1" "$2" -t nat 2>/dev/null | grep -E '^(:|-A)' | sed 's/ \[[0-9]*:[0-9]*\]$//' || true
}
count() { grep -c -- "$1" <<<"$2" || true; }

check_installed() {  # ns variant what
  local four six
  four=$(nat "$1" "iptables-$2-save")
  six=$(nat "$1" "ip6tables-$2-save")
  expect_eq "$3: ipv4 has one PREROUTING jump" "$(count "^$jump\$" "$four")" 1
  expect_eq "$3: ipv4 SIDECAR_INBOUND contents" "$(grep '^-A SIDECAR_INBOUND' <<<"$four")" \
    "$expected_chain4"
  expect_eq "$3: ipv6 has one PREROUTING jump" "$(count "^$jump\$" "$six")" 1
  expect_eq "$3: ipv6 SIDECAR_INBOUND contents" "$(grep '^-A SIDECAR_INBOUND' <<<"$six")" \
    "$expected_chain6"
}

check_variant() {  # variant other-variant
  local v=$1 other=$2 rc out before4 before6 installed4 installed6 state
  echo "== iptables-$v"
  new_netns "$v"
  in_ns() { ip netns exec "$ns" "$@"; }
  run_tool() { in_ns "$tool" "${flags[@]}" "$@"; }

  # Another tool's rules come first; they also make init-net pick this variant.
  for family in iptables ip6tables; do
    in_ns "$family-$v" -t nat -A PREROUTING -p udp --dport 53 -j RETURN -m comment --comment foreign
  done
  before4=$(nat "$ns" "iptables-$v-save")
  before6=$(nat "$ns" "ip6tables-$v-save")

  out=$(run_tool apply --dry-run)
  expect_eq "dry-run labels the ipv4 input" \
    "$(count "^### ipv4: input for \`iptables-$v-restore --noflush\`\$" "$out")" 1
  expect_eq "dry-run labels the ipv6 input" \
    "$(count "^### ipv6: input for \`ip6tables-$v-restore --noflush\`\$" "$out")" 1
  expect_eq "dry-run changes nothing (ipv4)" "$(nat "$ns" "iptables-$v-save")" "$before4"
  expect_eq "dry-run changes nothing (ipv6)" "$(nat "$ns" "ip6tables-$v-save")" "$before6"

  run_tool apply >/dev/null
  check_installed "$ns" "$v" "first apply"
  installed4=$(nat "$ns" "iptables-$v-save")
  installed6=$(nat "$ns" "ip6tables-$v-save")
  expect_eq "foreign rule kept, jump after it" "$(grep '^-A PREROUTING' <<<"$installed4")" \
    "-A PREROUTING -p udp -m udp --dport 53 -m comment --comment foreign -j RETURN
$jump"
  expect_eq "nothing installed in iptables-$other" \
    "$(nat "$ns" "iptables-$other-save" | grep -c SIDECAR || true)" 0

  run_tool apply >/dev/null
  expect_eq "second apply changes nothing (ipv4)" "$(nat "$ns" "iptables-$v-save")" "$installed4"
  expect_eq "second apply changes nothing (ipv6)" "$(nat "$ns" "ip6tables-$v-save")" "$installed6"

  out=$(run_tool apply --dry-run)
  expect_eq "dry-run after apply adds no jump" "$(count '^-A PREROUTING' "$out")" 0

  # Partial states left by an interrupted or foreign change converge.
  in_ns "iptables-$v" -t nat -D PREROUTING -p tcp -j SIDECAR_INBOUND \
    -m comment --comment "sidecar: inbound capture"
  run_tool apply >/dev/null
  expect_eq "jump deleted by hand -> restored" "$(nat "$ns" "iptables-$v-save")" "$installed4"

  in_ns "ip6tables-$v" -t nat -A PREROUTING -p tcp -j SIDECAR_INBOUND \
    -m comment --comment "sidecar: inbound capture"
  in_ns "ip6tables-$v" -t nat -A PREROUTING -p tcp -j SIDECAR_INBOUND \
    -m comment --comment "sidecar: inbound capture"
  expect_eq "(jump now three times)" \
    "$(count "^$jump\$" "$(nat "$ns" "ip6tables-$v-save")")" 3
  run_tool apply >/dev/null
  check_installed "$ns" "$v" "jump duplicated -> one"

  in_ns "iptables-$v" -t nat -A SIDECAR_INBOUND -p tcp --dport 1234 -j RETURN
  in_ns "iptables-$v" -t nat -I PREROUTING 1 -p tcp -j SIDECAR_INBOUND
  run_tool apply >/dev/null
  expect_eq "stale chain rule and odd jump -> replaced" "$(nat "$ns" "iptables-$v-save")" \
    "$installed4"

  # A rule another tool appends after our jump stays where it is across reruns.
  in_ns "iptables-$v" -t nat -A PREROUTING -p udp --dport 123 -j RETURN -m comment --comment later
  state=$(nat "$ns" "iptables-$v-save")
  run_tool apply >/dev/null
  expect_eq "rerun keeps rule order" "$(nat "$ns" "iptables-$v-save")" "$state"

  # Switching IPv6 off removes what an earlier apply installed there.
  run_tool --ipv6 off apply >/dev/null
  expect_eq "ipv6 off: ipv6 rules gone" "$(nat "$ns" "ip6tables-$v-save")" "$before6"
  expect_eq "ipv6 off: ipv4 rules stay" "$(nat "$ns" "iptables-$v-save")" "$state"
  run_tool apply >/dev/null
  check_installed "$ns" "$v" "ipv6 back on"

  # Without root (no NET_ADMIN): exit 3 and nothing changes.
  rc=0
  in_ns setpriv --reuid=65534 --regid=65534 --clear-groups "$tool" "${flags[@]}" apply \
    >/dev/null 2>&1 || rc=$?
  expect_rc "apply without root exits 3" "$rc" 3
  rc=0
  in_ns setpriv --reuid=65534 --regid=65534 --clear-groups "$tool" "${flags[@]}" clean \
    >/dev/null 2>&1 || rc=$?
  expect_rc "clean without root exits 3" "$rc" 3

  run_tool clean >/dev/null
  expect_eq "clean: other rules intact, ours gone (ipv4)" "$(nat "$ns" "iptables-$v-save")" \
    "$before4
-A PREROUTING -p udp -m udp --dport 123 -m comment --comment later -j RETURN"
  expect_eq "clean: other rules intact, ours gone (ipv6)" "$(nat "$ns" "ip6tables-$v-save")" \
    "$before6"
  out=$(run_tool clean)
  expect_eq "second clean is harmless" "$out" \
    "init-net: nothing to clean: no sidecar rules are installed"

  ip netns del "$ns"
}

check_default() {
  local default out
  echo "== fresh namespace: the variant iptables runs"
  new_netns default
  case "$(iptables --version)" in *nf_tables*) default=nft ;; *) default=legacy ;; esac
  ip netns exec "$ns" "$tool" "${flags[@]}" apply >/dev/null
  check_installed "$ns" "$default" "apply in iptables-$default"
  ip netns exec "$ns" "$tool" "${flags[@]}" clean >/dev/null
  out=$(ip netns exec "$ns" iptables-save -t nat; ip netns exec "$ns" ip6tables-save -t nat)
  expect_eq "clean leaves no sidecar rule" "$(count SIDECAR "$out")" 0
  ip netns del "$ns"
}

new_netns probe || skip "cannot create a network namespace"
probe=$ns
variants=()
for v in nft legacy; do
  if command -v "iptables-$v" >/dev/null && command -v "ip6tables-$v" >/dev/null &&
     ip netns exec "$probe" "iptables-$v" -t nat -S >/dev/null 2>&1 &&
     ip netns exec "$probe" "ip6tables-$v" -t nat -S >/dev/null 2>&1; then
    variants+=("$v")
  else
    echo "initnet_netns: iptables-$v unavailable here, not tested"
  fi
done
ip netns del "$probe"
[ "${#variants[@]}" -gt 0 ] || skip "no working iptables variant inside a network namespace"

for v in "${variants[@]}"; do
  if [ "$v" = nft ]; then check_variant nft legacy; else check_variant legacy nft; fi
done
command -v iptables >/dev/null && check_default

if [ "$failures" -gt 0 ]; then
  echo "initnet_netns: $failures check(s) failed" >&2
  exit 1
fi
echo "initnet_netns: all checks passed (${variants[*]})"
