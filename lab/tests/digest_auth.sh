#!/usr/bin/env bash
# digest_auth: access users authenticate with digest (RFC 3261 section 22, MD5 here: SIPp's
# only algorithm; SHA-256 is covered by the scenario tests). The right credentials register
# (401, then a local 200 with Contact;expires and Date) and call (407, then routed); wrong
# credentials are refused with a new challenge, and the third failure bans the source: its next
# REGISTER gets no answer at all. The ban hits only that source.
#
#   caller 127.0.0.2 (1001 / lab-pass-1001): 10 x REGISTER (uac_register.xml), then 10 calls
#                                           (uac_auth_call.xml)
#   attacker 127.0.0.4 (1001 / wrong): 3 x REGISTER -> 401, 401   (uac_register_wrong.xml)
#                                      1 more -> no answer (banned)
#   caller 127.0.0.2 again: 5 x REGISTER, 5 calls, still served
#   SBC access 127.0.0.1:5060 (realm sbc.lab) ... UAS 127.0.0.1:5080; config lab/configs/digest.yaml
# Needs the SBC: in direct mode it is skipped.
source "$(dirname "$0")/../lib.sh"
lab_begin digest_auth

if lab_is_direct; then
    LAB_PASS_REASON="not applicable in direct mode (tests the SBC's authentication)"
    lab_end
fi
sbc_start lab/configs/digest.yaml
uas_start uas 127.0.0.1:5080 uas_basic.xml
auth=(-au 1001 -key auth_user 1001)
# SIPp's digest uri defaults to sip:IP:PORT (a REGISTER's Request-URI); for INVITEs it is set to
# their Request-URI, which the SBC requires.
call_uri=(-auth_uri service@127.0.0.1:5060)

UAC_ADDR=127.0.0.2:5062 uac_run register 127.0.0.1:5060 uac_register.xml 10 5 \
    "${auth[@]}" -ap lab-pass-1001
UAC_ADDR=127.0.0.2:5062 uac_run call 127.0.0.1:5060 uac_auth_call.xml 10 5 \
    "${auth[@]}" "${call_uri[@]}" -ap lab-pass-1001 -d 200
UAC_ADDR=127.0.0.4:5062 uac_run wrong 127.0.0.1:5060 uac_register_wrong.xml 3 3 \
    "${auth[@]}" -ap not-the-password
sleep 0.5
UAC_ADDR=127.0.0.4:5062 LAB_RECV_TIMEOUT=3000 uac_start banned 127.0.0.1:5060 \
    uac_register_wrong.xml 1 1 "${auth[@]}" -ap not-the-password
uac_wait banned fail
UAC_ADDR=127.0.0.2:5062 uac_run register_again 127.0.0.1:5060 uac_register.xml 5 5 \
    "${auth[@]}" -ap lab-pass-1001
UAC_ADDR=127.0.0.2:5062 uac_run call_again 127.0.0.1:5060 uac_auth_call.xml 5 5 \
    "${auth[@]}" "${call_uri[@]}" -ap lab-pass-1001 -d 200
uas_finish uas 15

# The wrong password was refused with a fresh challenge each time, never a 403 or 404 that
# would tell it apart from an unknown user.
n401=$(grep -c "^SIP/2.0 401" "$OUT/wrong.messages.log" 2>/dev/null || echo 0)
((n401 == 6)) || lab_fail "attacker: expected 6 x 401 (3 calls x 2 REGISTERs), got $n401"
grep -q "source banned.*source=127.0.0.4/32\|source=127.0.0.4/32.*source banned" "$OUT/sbc.log" ||
    lab_fail "the SBC log does not show 127.0.0.4 banned"
grep -q "source=127.0.0.2/32" "$OUT/sbc.log" && lab_fail "the legitimate caller 127.0.0.2 was banned"
sleep 0.5
sbc_metrics >"$OUT/metrics.txt"
failed=$(metric 'sbc_auth_total{outcome="failed"}')
ok=$(metric 'sbc_auth_total{outcome="ok"}')
offences=$(metric 'sbc_policy_offences_total{kind="auth_failure"}')
bans=$(metric sbc_policy_bans_active)
registered=$(metric sbc_registrations_answered_total)
lab_step "metrics: auth ok=$ok failed=$failed, auth_failure offences=$offences, bans active=$bans, REGISTER 200s=$registered"
((failed == 3)) || lab_fail "sbc_auth_total{outcome=\"failed\"} = $failed, expected 3"
((offences == 3)) || lab_fail "auth_failure offences = $offences, expected 3"
((bans == 1)) || lab_fail "sbc_policy_bans_active = $bans, expected 1"
((ok == 30)) || lab_fail "sbc_auth_total{outcome=\"ok\"} = $ok, expected 30 (15 REGISTERs + 15 INVITEs)"
((registered == 15)) || lab_fail "sbc_registrations_answered_total = $registered, expected 15"
LAB_PASS_REASON="right credentials register (401/200) and call (407/200) 15/15; wrong ones get 401 and the 3rd failure bans the source"
lab_end
