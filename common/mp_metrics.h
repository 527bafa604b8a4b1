/* Classification metrics shared by training and evaluation. Scores are
 * ranked from the highest down; equal scores rank by class index, lowest
 * first, so a prediction never depends on sort details. */
#ifndef MP_METRICS_H
#define MP_METRICS_H

/* How many classes rank before label: 0 when label is the best guess;
 * label is among the top k exactly when the rank is below k. */
int mp_rank_of(const float *scores, int classes, int label);

/* The k best classes, best first (k <= classes). */
void mp_top_k(const float *scores, int classes, int k, int *out);

/* The error of correct guesses among n images: the misses over the images,
 * one rounding (10 of 50 is 0.2, where 1 - 40/50 is 0.19999999999999996). */
static inline double mp_error_rate(double correct, double n)
{
	return (n - correct) / n;
}

#endif
