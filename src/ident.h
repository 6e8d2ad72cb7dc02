/*-------------------------------------------------------------------------
 *
 * ident.h
 *	  Table and column names of the state-tables writer (ident.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ISM_IDENT_H
#define ISM_IDENT_H

extern void ism_sha256_hex(const char *data, size_t len, char *hex, size_t nhex);
extern char *ism_identifier(const char *name, size_t len);
extern char *ism_table_name(const char *processor_id, const char *table_name);

#endif							/* ISM_IDENT_H */
