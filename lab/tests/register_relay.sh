#!/usr/bin/env bash
# register_relay: REGISTER from access clients relayed to Kamailio 5.6 (registrar, digest auth)
# with the SBC's own contact; client refreshes answered by the SBC; a call sent to Kamailio for
# a registered user reaches that client through the SBC; a client's TCP connection closing
# removes its binding and unregisters it upstream.
#
#   alice 127.0.0.11:5061 (UDP) and bob 127.0.0.12 (TCP): lab/reg_client.py, each registers
#     (401 from Kamailio relayed, then 200), refreshes 5 times, answers one call, leaves
#   SBC access 127.0.0.1:5060 (udp, tcp) | trunk 127.0.0.1:5070 <-> Kamailio 127.0.0.1:5080
#   caller 127.0.0.3:5062 (SIPp uac_basic.xml) -> Kamailio: lookup("location"), t_relay
#   configs: lab/configs/register_relay.yaml, lab/configs/kamailio-registrar.cfg
#
# Checked: Kamailio's location holds only the SBC's contacts (sip:rg...@127.0.0.1:5070), never
# a client address; it saw one REGISTER per client for 6 client REGISTERs; both calls
# complete; after bob's connection closes, Kamailio logs bob's unregistration (Expires 0 from
# the SBC), its location has no bob, the next call to bob fails with 404, and
# sbc_registrations_active counts alice only.
# Needs the SBC: in direct mode it is skipped.
source "$(dirname "$0")/../lib.sh"
lab_begin register_relay

if lab_is_direct; then
    LAB_PASS_REASON="not applicable in direct mode (tests the SBC's registrar relay)"
    lab_end
fi
require_tool kamailio kamailio
require_tool kamcmd kamailio

# ---- Kamailio: foreground, its control socket and pid file in this test's directory.
sed "s|@RUNDIR@|$OUT|g" "$LAB_DIR/configs/kamailio-registrar.cfg" >"$OUT/kamailio.cfg"
lab_step "starting Kamailio (registrar) on udp:127.0.0.1:5080"
timeout -k 5 "$LAB_TEST_TIMEOUT" kamailio -f "$OUT/kamailio.cfg" -DD -E -m 64 -M 8 \
    -P "$OUT/kamailio.pid" -Y "$OUT" >"$OUT/kamailio.stdout" 2>"$OUT/kamailio.log" </dev/null &
KAM_PID=$!
lab_wait_listening "$KAM_PID" 10 udp:127.0.0.1:5080 || lab_abort "Kamailio did not start (see kamailio.log)"
kam() { kamcmd -s "unix:$OUT/kamailio_ctl" "$@"; }
kam_stop() {
    [[ -n ${KAM_PID:-} ]] || return 0
    kill -TERM "$KAM_PID" 2>/dev/null
    wait "$KAM_PID" 2>/dev/null
    KAM_PID=
}
# On an abort, the namespace's cleanup stops Kamailio with everything else started here.

sbc_start lab/configs/register_relay.yaml

# ---- Two clients register, refresh, then wait for a call each.
client() {
    local name=$1
    shift
    timeout -k 5 90 python3 "$LAB_DIR/reg_client.py" --sbc 127.0.0.1:5060 --domain lab.example \
        --password secret --refreshes 5 --calls 1 "$@" >"$OUT/$name.ua.log" 2>&1 &
}
client alice --local 127.0.0.11:5061 --transport udp --user alice
ALICE=$!
client bob --local 127.0.0.12:0 --transport tcp --user bob
BOB=$!
for name in alice bob; do
    for ((i = 0; i < 100; i++)); do
        grep -qx registered "$OUT/$name.ua.log" 2>/dev/null && break
        sleep 0.1
    done
    grep -qx registered "$OUT/$name.ua.log" || lab_abort "$name did not register (see $name.ua.log)"
    lab_step "$name registered and refreshed 5 times"
done

# ---- Kamailio knows the SBC's contacts only.
kam ul.dump >"$OUT/location.txt" 2>&1 || lab_fail "kamcmd ul.dump failed (see location.txt)"
for user in alice bob; do
    # usrloc without domains: the AoR is the user part.
    contact=$(awk -v aor="$user" '$1 == "AoR:" && $2 == aor { on = 1 } on && $1 == "Address:" { print $2; exit }' \
        "$OUT/location.txt")
    [[ $contact =~ ^sip:rg[0-9a-f]{32}@127\.0\.0\.1:5070 ]] ||
        lab_fail "Kamailio's contact for $user is '${contact:-none}', not an SBC token (see location.txt)"
done
grep -qE "127\.0\.0\.1[12]" "$OUT/location.txt" && lab_fail "a client address reached Kamailio's location"
# Six client REGISTERs each (one challenged, 5 refreshes answered by the SBC): Kamailio
# accepted one per client.
for user in alice bob; do
    n=$(grep -c "REGISTER aor=sip:$user@lab.example" "$OUT/kamailio.log")
    ((n == 1)) || lab_fail "Kamailio accepted $n REGISTERs for $user, expected 1 (refreshes answered by the SBC)"
done
lab_step "Kamailio location: SBC tokens only; 1 upstream REGISTER per client for 6 client REGISTERs"

# ---- Calls to the registered users, through Kamailio and the SBC.
UAC_ADDR=127.0.0.3:5062 uac_run call_alice 127.0.0.1:5080 uac_basic.xml 1 1 -s alice -d 500
UAC_ADDR=127.0.0.3:5062 uac_run call_bob 127.0.0.1:5080 uac_basic.xml 1 1 -s bob -d 500
for c in alice:$ALICE bob:$BOB; do
    rc=0
    wait "${c#*:}" || rc=$?
    ((rc == 0)) || lab_fail "client ${c%%:*} failed (status $rc, see ${c%%:*}.ua.log)"
done

# ---- bob's TCP connection is closed (its client exited): binding gone, unregistered upstream.
for ((i = 0; i < 50; i++)); do
    grep -q "REGISTER aor=sip:bob@lab.example .*expires=0" "$OUT/kamailio.log" && break
    sleep 0.1
done
grep -q "REGISTER aor=sip:bob@lab.example .*expires=0" "$OUT/kamailio.log" ||
    lab_fail "no unregistration of bob reached Kamailio after its connection closed"
kam ul.dump >"$OUT/location_after.txt" 2>&1
grep -qE "AoR: bob$" "$OUT/location_after.txt" && lab_fail "bob is still in Kamailio's location"
grep -qE "AoR: alice$" "$OUT/location_after.txt" || lab_fail "alice left Kamailio's location"
UAC_ADDR=127.0.0.3:5062 uac_run call_bob_gone 127.0.0.1:5080 uac_expect_404.xml 1 1 -s bob
sleep 0.3
active=$(metric sbc_registrations_active)
relayed=$(metric sbc_registrations_relayed_total)
local_200=$(metric sbc_registrations_answered_total)
lab_step "metrics: active=$active relayed=$relayed answered locally=$local_200"
((active == 1)) || lab_fail "sbc_registrations_active = $active, expected 1 (alice)"
# Per client: the challenged REGISTER and the accepted one; bob's unregistration.
((relayed == 5)) || lab_fail "sbc_registrations_relayed_total = $relayed, expected 5"
((local_200 == 10)) || lab_fail "sbc_registrations_answered_total = $local_200, expected 10 refreshes"

kam_stop
LAB_PASS_REASON="Kamailio saw only SBC tokens, 1 REGISTER per client for 6, calls via lookup(location) reached UDP and TCP clients, a closed connection unregistered bob (next call 404)"
lab_end
