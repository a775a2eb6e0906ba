#!/usr/bin/env bash
# loss_udp: 200 calls at 20 calls/s with 10 % packet loss emulated by SIPp on both ends
# (-lost 10: each SIPp drops 10 % of the messages it sends and 10 % of those it receives,
# retransmissions included); every call must complete. Through the SBC each hop has one
# lossy end, so every message is lost with probability 10 %.
#
#   UAC 127.0.0.1:5062 -> SBC 127.0.0.1:5060 | SBC 127.0.0.1:5070 -> UAS 127.0.0.1:5080
#   scenarios: uac_loss.xml / uas_loss.xml; config: configs/sbc.yaml (T1 = 500 ms)
#
# Expectations on the SBC: RFC 3261 reliability over UDP on both legs: retransmit its
# INVITE on leg B until a response (Timer A), its 2xx to the caller until the ACK, its
# BYEs until answered; answer retransmitted requests from the stored response (INVITE
# retransmissions get the last provisional/final again, BYE retransmissions the 200),
# never create a second call for a retransmitted INVITE.
# Validated SIPp-to-SIPp (LAB_MODE=direct): yes. Talking directly, both ends of the single
# hop are lossy, so direct mode uses -lost 5 on each (9.75 % per message, like the SBC
# mode's 10 %) instead of -lost 10 (19 %, at which a BYE whose answers are all lost within
# the UAS's 12 s time-wait fails a call every few runs).
LAB_TEST_TIMEOUT=150
source "$(dirname "$0")/../lib.sh"
lab_begin loss_udp

loss=10
lab_is_direct && loss=5

sbc_start configs/sbc.yaml
uas_start uas 127.0.0.1:5080 uas_loss.xml -lost "$loss"
uac_run uac "$(sbc_or_direct 127.0.0.1:5060 127.0.0.1:5080)" uac_loss.xml 200 20 -lost "$loss"
uas_finish uas 200 30

lab_end
