/* leak.c - passes, but leaves a child behind that holds its stdout: the
 * harness must still print the result and go on (it kills the session). */
#include <stdio.h>
#include <unistd.h>
int main(void)
{
    if (fork() == 0) {
        for (int i = 0; i < 3600; i++)
            sleep(1);
        return 0;
    }
    puts("parent exits; its child keeps stdout open");
    return 0;
}
