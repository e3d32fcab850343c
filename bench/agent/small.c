/* The small C file bench/agent/run compiles 50 times. */
#include <stdio.h>
#include <string.h>

struct point { int x, y; };

static int dist2(struct point a, struct point b) { return (a.x - b.x) * (a.x - b.x) + (a.y - b.y) * (a.y - b.y); }

int main(int argc, char** argv) {
  struct point p = {argc, (int)strlen(argv[0])}, q = {3, 4};
  printf("%d\n", dist2(p, q));
  return 0;
}
