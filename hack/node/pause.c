/* The pod sandbox's pause process for the node tier (`make test-node`): containerd's CRI starts
 * it as PID 1 of every pod and never pulls it, so hack/node/images.sh builds it here (static,
 * gcc -Os -static) and packs it as registry.k8s.io/pause:3.10. It sleeps, reaps zombies (PID 1's
 * job when containers share the pod's PID namespace) and exits on SIGINT/SIGTERM, like upstream's
 * build/pause/linux/pause.c. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_term(int sig) {
  (void)sig;
  _exit(0);
}

static void on_chld(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(int argc, char **argv) {
  if (argc > 1 && argv[1][0] == '-' && argv[1][1] == 'v') {
    puts("pause (rockchip-llama node tier)");
    return 0;
  }
  if (getpid() != 1) fputs("pause: warning: not PID 1\n", stderr);
  struct sigaction term = {.sa_handler = on_term};
  struct sigaction chld = {.sa_handler = on_chld, .sa_flags = SA_NOCLDSTOP};
  if (sigaction(SIGINT, &term, NULL) < 0 || sigaction(SIGTERM, &term, NULL) < 0 ||
      sigaction(SIGCHLD, &chld, NULL) < 0)
    return 1;
  for (;;) pause();
}
