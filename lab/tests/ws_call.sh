#!/usr/bin/env bash
# ws_call: SIP over WebSocket (RFC 7118), plain and secure, as browsers speak it.
#
#   client lab/sip_client.py --WS--> SBC ws 127.0.0.1:8080 (max_connections: 3)
#   client lab/sip_client.py --WSS--> SBC wss 127.0.0.1:8443
#   SBC trunk 127.0.0.1:5070 --UDP--> UAS 127.0.0.1:5080 (uas_callee_hangup.xml)
#   config: lab/configs/ws.yaml; certificate: self-signed, made here with openssl.
#
# The client behaves like JsSIP: `Sec-WebSocket-Protocol: sip`, one SIP message per text
# frame, Via `SIP/2.0/WS(S) <random>.invalid`, Contact `<sip:user@<random>.invalid;
# transport=ws(s)>`. It sends REGISTER (answered locally today: any final answer, on the
# same socket, is accepted), then INVITE; the UAS answers and hangs up.
#
# Expectations on the SBC: for each of ws and wss, the handshake echoes the sip
# subprotocol; the REGISTER and INVITE answers come back on the client's socket; the INVITE
# reaches the UAS over UDP; the UAS's BYE reaches the client over its socket, addressed to
# its .invalid Contact, and the client's 200 goes back to the UAS. A handshake offering no
# subprotocol, or only another one, is refused. With max_connections 3 on the ws listener,
# three connections are accepted, the fourth is refused, and one more is accepted once one
# of the three closed. Received messages are counted per transport (metrics ws and wss).
# Validated without the SBC (LAB_MODE=direct): no; the UAS does not speak WebSocket.
source "$(dirname "$0")/../lib.sh"
LAB_TEST_TIMEOUT=90
lab_begin ws_call

command -v openssl >/dev/null || lab_abort "openssl not installed (bash lab/test-all.sh installs the lab's peers)"
if lab_is_direct; then
    lab_note "direct mode: nothing to validate (the WebSocket side needs the SBC)"
    lab_end
fi

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=sbc-lab" -addext "subjectAltName=IP:127.0.0.1" \
    -keyout "$OUT/sbc-key.pem" -out "$OUT/sbc-cert.pem" >"$OUT/openssl.log" 2>&1 ||
    lab_abort "openssl could not make a certificate (see openssl.log)"

sbc_start lab/configs/ws.yaml

client() { python3 "$LAB_DIR/sip_client.py" "$@"; }

for t in ws wss; do
    port=8080
    [[ $t == wss ]] && port=8443
    uas_start "uas_$t" 127.0.0.1:5080 uas_callee_hangup.xml
    lab_step "$t client: REGISTER, INVITE, waits for the callee's BYE"
    if client call "$t" "127.0.0.1:$port" --ca "$OUT/sbc-cert.pem" --register \
        >"$OUT/$t.ua.log" 2>&1; then
        lab_step "$t client: $(tail -n 1 "$OUT/$t.ua.log")"
    else
        lab_fail "$t client: $(tail -n 1 "$OUT/$t.ua.log")"
    fi
    grep -q "^REGISTER answered" "$OUT/$t.ua.log" || lab_fail "$t: no REGISTER answer on the socket"
    grep -q "^BYE sip:lab[0-9]*@[a-z0-9]*\.invalid;transport=$t SIP/2.0" "$OUT/$t.ua.log" ||
        lab_fail "$t: the BYE on the socket does not target the client's .invalid Contact"
    uas_finish "uas_$t" 1
    lab_step "$t: a handshake without the sip subprotocol"
    client refused "$t" "127.0.0.1:$port" --ca "$OUT/sbc-cert.pem" >"$OUT/$t-refused.ua.log" 2>&1 ||
        lab_fail "$t: a handshake offering no subprotocol was accepted"
    client refused "$t" "127.0.0.1:$port" --ca "$OUT/sbc-cert.pem" --protocol "chat, sips" \
        >"$OUT/$t-refused-chat.ua.log" 2>&1 ||
        lab_fail "$t: a handshake offering only 'chat, sips' was accepted"
done

lab_step "ws listener limit: 3 connections accepted, the 4th refused, a freed slot reused"
client limit ws 127.0.0.1:8080 3 >"$OUT/limit.ua.log" 2>&1 ||
    lab_fail "connection limit: $(tail -n 1 "$OUT/limit.ua.log")"
refused=$(metric sbc_tcp_connections_refused_total)
[[ ${refused%.*} -ge 1 ]] || lab_fail "sbc_tcp_connections_refused_total is $refused, expected >= 1"

for t in ws wss; do
    n=$(metric "sbc_sip_messages_received_total{transport=\"$t\"}")
    # REGISTER, INVITE, ACK, 200 to the BYE.
    if [[ ${n%.*} -ge 4 ]]; then
        lab_step "messages received over $t: $n"
    else
        lab_fail "sbc_sip_messages_received_total{transport=\"$t\"} is $n, expected >= 4"
    fi
done

LAB_PASS_REASON="ws and wss calls with BYE back over the socket, subprotocol enforced, connection limit"
lab_end
