/* hang.c - a stand-in test that never ends: the harness's per-program
 * timeout must end it (FAIL, rc=143) and go on with the next program. */
#include <unistd.h>
int main(void)
{
    for (int i = 0; i < 3600; i++)
        sleep(1);
    return 0;
}
