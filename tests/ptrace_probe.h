/* ptrace_probe.h - can this test trace a child (containers may forbid it)?
 * Shared by the tests that kill a process at a chosen syscall. */
#ifndef PTRACE_PROBE_H
#define PTRACE_PROBE_H

#include <signal.h>
#include <stdbool.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <unistd.h>

static inline bool ptrace_available(void)
{
	bool ok = false;
	int status;
	pid_t pid = fork();

	if (pid < 0)
		return false;
	if (pid == 0) {
		if (ptrace(PTRACE_TRACEME, 0, NULL, NULL) < 0)
			_exit(1);
		raise(SIGSTOP);
		_exit(0);
	}
	if (waitpid(pid, &status, 0) == pid && WIFSTOPPED(status)) {
		ok = ptrace(PTRACE_SETOPTIONS, pid, NULL,
			    (void *)(long)(PTRACE_O_TRACESYSGOOD | PTRACE_O_EXITKILL)) == 0;
		kill(pid, SIGKILL);
	}
	waitpid(pid, &status, 0);
	return ok;
}

#endif
