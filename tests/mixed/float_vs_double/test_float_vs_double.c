/* Float and double builds of the same sources agree on every op's forward. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

int fvd_count_f(void);
int fvd_count_d(void);
const char *fvd_name_f(int i);
double *fvd_run_f(int i, int64_t *n);
double *fvd_run_d(int i, int64_t *n);

Test(float_vs_double, every_case_agrees) {
  cr_assert(fvd_count_f() == fvd_count_d());
  for (int i = 0; i < fvd_count_f(); i++) {
    int64_t nf = 0, nd = 0;
    double *f = fvd_run_f(i, &nf), *d = fvd_run_d(i, &nd);
    cr_assert(f && d && nf == nd, "%s: failed to run", fvd_name_f(i));
    double diff = 0, ref = 0;
    for (int64_t j = 0; j < nf; j++) diff += (f[j] - d[j]) * (f[j] - d[j]), ref += d[j] * d[j];
    double e = sqrt(diff) / fmax(sqrt(ref), 1e-30);
    cr_expect(e < 1e-5, "%s: float vs double relative error %.3g", fvd_name_f(i), e);
    free(f), free(d);
  }
}
