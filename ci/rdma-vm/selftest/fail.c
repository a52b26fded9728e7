/* fail.c - a stand-in test that fails: the harness must report FAIL (rc=3). */
#include <stdio.h>
int main(void)
{
    puts("failing on purpose");
    return 3;
}
