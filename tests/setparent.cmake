# set-parent and rebase (vhd/setparent.c, tools/cmd_setparent.c).
#
# test_setparent  the library: moved/renamed parents, locators one by one,
#                 refusals (other unique id, loops, non-differencing), foreign
#                 locator layouts, rebase onto parents of other content and
#                 size, kill -9 (ptrace: at every syscall of a set-parent, at
#                 chosen syscalls of ~24 rebases) and torn headers.
#                 TEST_SEED=<n> replays; SETPARENT_ROUNDS=<n> rebase rounds.
# setparent       the CLI: help, exit codes, JSON, --force warning, -b/-u
#                 spellings, and kill -9 of `vhdtool rebase` at random times.
vhd_c_test(test_setparent)
vhd_sh_test(setparent)
