/*
 * suite_main.c - main() of the channel suites: runs the tcases the suite
 * file lists in fx_suite (see fixture.h) with Check's runner.
 */
#include <check.h>
#include <signal.h>
#include <stdlib.h>

#include "fixture.h"

int
main(void)
{
	const struct fx_tcase *t;
	Suite *s;
	SRunner *sr;
	int failed;

	if (fx_suite.before != NULL)
		fx_suite.before();
	/* A peer that has gone must give EPIPE, not kill the suite. */
	signal(SIGPIPE, SIG_IGN);
	s = suite_create(fx_suite.name);
	for (t = fx_suite.tcases; t->name != NULL; t++) {
		TCase *tc = tcase_create(t->name);

		if (t->timeout > 0)
			tcase_set_timeout(tc, t->timeout);
		t->add(tc);
		suite_add_tcase(s, tc);
	}
	sr = srunner_create(s);
	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
