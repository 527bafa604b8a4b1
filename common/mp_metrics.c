#include "mp_metrics.h"

/* Class a ranks before class b. */
static int before(const float *s, int a, int b)
{
	return s[a] > s[b] || (s[a] == s[b] && a < b);
}

int mp_rank_of(const float *scores, int classes, int label)
{
	int rank = 0;
	for (int j = 0; j < classes; j++)
		if (j != label && before(scores, j, label))
			rank++;
	return rank;
}

void mp_top_k(const float *scores, int classes, int k, int *out)
{
	/* insertion into a short sorted list: k is small (5) */
	int n = 0;
	for (int j = 0; j < classes; j++) {
		if (n == k && !before(scores, j, out[k - 1]))
			continue;
		int i = n < k ? n++ : k - 1;
		while (i > 0 && before(scores, j, out[i - 1])) {
			out[i] = out[i - 1];
			i--;
		}
		out[i] = j;
	}
}
