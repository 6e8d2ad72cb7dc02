/*-------------------------------------------------------------------------
 *
 * json_number.h
 *	  JSON numbers as decimal text: what a number's literal says, exactly,
 *	  and which types hold it (json_number.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ISM_JSON_NUMBER_H
#define ISM_JSON_NUMBER_H

/*
 * A number literal read, never converted: value = (-1 if negative) *
 * 0.S * 10^point, S being its significant digits (the first non-zero
 * digit of the mantissa to the last), none for zero.
 */
typedef struct IsmNumber
{
	const char *mantissa;		/* the literal's digits and '.', sign and exponent aside */
	int			mantissa_len;
	bool		negative;
	bool		integer;		/* written without fraction or exponent */
	bool		zero;			/* all its digits are 0 */
	int			int_digits;		/* digits before the '.', as written */
	int			frac_digits;	/* digits after it, as written */
	int64		exponent;		/* as written (0 without), saturated far beyond any use */
	int64		point;			/* see above; 0 for zero */
	int			first;			/* index in the mantissa digits of S's first digit */
	int			nsig;			/* digits in S */
} IsmNumber;

extern bool ism_number_read(const char *text, int len, IsmNumber *n);
extern bool ism_number_same_value(const IsmNumber *a, const IsmNumber *b);
extern bool ism_number_fits_int64(const IsmNumber *n);
extern bool ism_number_fits_double(const IsmNumber *n);
extern bool ism_number_fits_numeric(const IsmNumber *n);
extern bool ism_number_whole_int(const IsmNumber *n, int *out);
extern double ism_number_to_double(const IsmNumber *n);
extern bool ism_number_python_zero(const IsmNumber *n);
extern void ism_number_digits(const IsmNumber *n, char *out);

#endif							/* ISM_JSON_NUMBER_H */
