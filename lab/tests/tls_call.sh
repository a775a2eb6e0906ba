#!/usr/bin/env bash
# tls_call: a caller on SIP over TLS reaches a UDP trunk; the callee's BYE comes back over
# the caller's TLS connection; the listener's certificate is reloaded when its files change.
#
#   client lab/sip_client.py --TLS--> SBC access 127.0.0.1:5061 | SBC trunk 127.0.0.1:5070
#     --UDP--> UAS 127.0.0.1:5080 (uas_callee_hangup.xml)
#   config: lab/configs/tls.yaml; certificates: self-signed, made here with openssl
#   (EC P-256, SAN IP:127.0.0.1) as sbc-cert.pem / sbc-key.pem in the SBC's directory.
#
# Debian's SIPp is built without TLS, so the caller is lab/sip_client.py (Python ssl,
# verifying the SBC's certificate against the one made here). Like a browser's stack it
# writes `.invalid` hosts in its Via and Contact: nothing can be sent to them.
#
# Expectations on the SBC: the TLS handshake succeeds (TLS 1.2+ and the certificate
# verifies for 127.0.0.1); the INVITE is answered 100 and 200 over the connection and
# relayed to the UAS over UDP; a CRLFCRLF ping on the connection gets a CRLF pong (RFC 5626);
# the UAS's BYE is relayed to the caller over its connection, with the caller's Contact as
# Request-URI, and its 200 is relayed back to the UAS. Then the certificate files are
# replaced (new key, new certificate): within a few seconds `openssl s_client` sees the new
# certificate's fingerprint. A broken key file then leaves the new certificate in service
# and the SBC logs an error. The received-message counter with label tls counts the
# caller's messages.
# Validated without the SBC (LAB_MODE=direct): no; there is no TLS peer to stand in for it.
source "$(dirname "$0")/../lib.sh"
LAB_TEST_TIMEOUT=90
lab_begin tls_call

command -v openssl >/dev/null || lab_abort "openssl not installed (bash lab/test-all.sh installs the lab's peers)"
if lab_is_direct; then
    lab_note "direct mode: nothing to validate (the TLS side needs the SBC)"
    lab_end
fi

# make_cert NAME: a self-signed EC certificate for 127.0.0.1 as NAME-cert.pem / NAME-key.pem.
make_cert() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj "/CN=$1" -addext "subjectAltName=IP:127.0.0.1" \
        -keyout "$OUT/$1-key.pem" -out "$OUT/$1-cert.pem" >"$OUT/openssl-$1.log" 2>&1 ||
        lab_abort "openssl could not make a certificate (see openssl-$1.log)"
}
fingerprint() { openssl x509 -in "$1" -noout -fingerprint -sha256 | cut -d= -f2; }
# served_fingerprint: the fingerprint of the certificate the SBC presents now.
served_fingerprint() {
    timeout 5 openssl s_client -connect 127.0.0.1:5061 -servername localhost </dev/null 2>/dev/null |
        openssl x509 -noout -fingerprint -sha256 2>/dev/null | cut -d= -f2
}

make_cert one
cp "$OUT/one-cert.pem" "$OUT/sbc-cert.pem"
cp "$OUT/one-key.pem" "$OUT/sbc-key.pem"

sbc_start lab/configs/tls.yaml
uas_start uas 127.0.0.1:5080 uas_callee_hangup.xml

lab_step "TLS caller: INVITE, ACK, ping, waits for the callee's BYE"
if python3 "$LAB_DIR/sip_client.py" call tls 127.0.0.1:5061 --ca "$OUT/one-cert.pem" --ping \
    >"$OUT/caller.ua.log" 2>&1; then
    lab_step "caller: $(tail -n 1 "$OUT/caller.ua.log")"
else
    lab_fail "TLS caller: $(tail -n 1 "$OUT/caller.ua.log")"
fi
grep -q "^<<< CRLF pong" "$OUT/caller.ua.log" || lab_fail "no CRLF pong to the CRLFCRLF ping"
grep -q "^BYE sip:lab[0-9]*@[a-z0-9]*\.invalid;transport=tls SIP/2.0" "$OUT/caller.ua.log" ||
    lab_fail "the BYE on the TLS connection does not target the caller's .invalid Contact"
uas_finish uas 1

# --- certificate reload ---
first=$(served_fingerprint)
[[ $first == "$(fingerprint "$OUT/one-cert.pem")" ]] ||
    lab_fail "s_client sees ${first:-nothing}, not the first certificate"
make_cert two
want=$(fingerprint "$OUT/two-cert.pem")
lab_step "replacing the certificate files (atomic renames)"
cp "$OUT/two-key.pem" "$OUT/sbc-key.pem.new" && mv "$OUT/sbc-key.pem.new" "$OUT/sbc-key.pem"
cp "$OUT/two-cert.pem" "$OUT/sbc-cert.pem.new" && mv "$OUT/sbc-cert.pem.new" "$OUT/sbc-cert.pem"
seen=
for ((i = 0; i < 40; i++)); do
    seen=$(served_fingerprint)
    [[ $seen == "$want" ]] && break
    sleep 0.25
done
if [[ $seen == "$want" ]]; then
    lab_step "new certificate served after $((i / 4)).$((i % 4 * 25))s"
else
    lab_fail "after 10 s s_client still sees ${seen:-nothing}, not the new certificate $want"
fi
lab_step "breaking the key file: the new certificate must stay in service"
echo "not a key" >"$OUT/sbc-key.pem"
sleep 3
seen=$(served_fingerprint)
[[ $seen == "$want" ]] || lab_fail "after a broken key file s_client sees ${seen:-nothing}, not $want"
grep -q "TLS certificate not reloaded" "$OUT/sbc.log" || lab_fail "no error logged for the broken key file"

lab_step "a second call over TLS with the reloaded certificate"
uas_start uas2 127.0.0.1:5080 uas_callee_hangup.xml
python3 "$LAB_DIR/sip_client.py" call tls 127.0.0.1:5061 --ca "$OUT/two-cert.pem" \
    >"$OUT/caller2.ua.log" 2>&1 || lab_fail "second TLS caller: $(tail -n 1 "$OUT/caller2.ua.log")"
uas_finish uas2 1

LAB_PASS_REASON="TLS call with BYE back over the connection, CRLF keep-alive, certificate reloaded"
lab_end
