/*-------------------------------------------------------------------------
 *
 * ack_gate.h
 *	  Acks held until the commit they follow is durable (ack_gate.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ISM_ACK_GATE_H
#define ISM_ACK_GATE_H

#include "jetstream.h"

extern void ism_settle_after_commit(IsmMessage *m, IsmSettle how);
extern void ism_ack_gate_turn(int ack_wait_ms);
extern long ism_ack_gate_wait_ms(long wait_ms);
extern void ism_ack_gate_let_go(int wait_ms);

#endif							/* ISM_ACK_GATE_H */
