/* check_list: the registered checks, in the order every stage runs them.
 * A new check is one file with its struct check_ops and one line here.
 *
 * The order matters: the rate limits come first, because they must count
 * every request that reaches the pipeline (Postfix's anvil counts a
 * request whether or not it is then accepted), and a client past its rate
 * must not cost an SPF lookup, a table lookup or a callahead; they need
 * nothing the others learn. The screening comes next, at the connect
 * stage: its memory (check_screen) before the tests that skip what a
 * client passed before; the DNSBL check starts its lookups (check_dnsbl)
 * before the pre-greet test (check_pregreet) waits, and collects them
 * after it (check_dnsbl_verdict, at the end of the connect stage, or at
 * the first RCPT with dnsbl_action = enforce or ignore), so the lookups
 * run during the wait. The DNSBL's RCPT hook comes before the checks that
 * spend lookups on a client it may refuse, and before greylisting, which
 * reads the trust a DNSWL or the memory gives. The header check filters
 * the content before anything reads the header and refuses what the
 * header alone decides before any lookup is awaited; SPF answers RCPT before the recipient
 * policy spends a lookup or a callahead on a sender it refuses; DKIM and
 * DMARC need SPF's result and the From: authors; the trace fields are
 * written last, from what the others found. Greylisting comes after the
 * recipient policy, so an unknown user gets its 550 at once and leaves no
 * triplet behind (a 451 first would have the client retry a recipient
 * that never exists, and harvesters fill the table), and after SPF, whose
 * result keys it. The content filters (milters) come last: they are asked
 * only for what mxd's own checks accepted (as Postfix asks its milters
 * after smtpd's restrictions), and see the content as it will be stored. */
#include "check/check_impl.h"

extern const struct check_ops check_rate, check_screen, check_dnsbl, check_pregreet,
    check_dnsbl_verdict, check_header, check_spf, check_dkim, check_trace, check_rcpt_policy,
    check_greylist, check_milter;

const struct check_ops *const check_list[] = {
    &check_rate,          &check_screen,      &check_dnsbl,    &check_pregreet,
    &check_dnsbl_verdict, &check_header,      &check_spf,      &check_dkim,
    &check_trace,         &check_rcpt_policy, &check_greylist, &check_milter,
};
const size_t check_list_len = sizeof(check_list) / sizeof(check_list[0]);

struct check_session *
check_session_new(const struct check_env *env, const struct conf *conf,
                  const struct check_client *client, check_sink_cb sink, void *sink_arg)
{
    return check_session_new_list(env, conf, client, sink, sink_arg, check_list, check_list_len, 0);
}
