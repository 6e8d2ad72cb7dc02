/*-------------------------------------------------------------------------
 *
 * ident.c
 *	  Table and column names for the state-tables writer.
 *
 * Tables are named as upstream: "<processor_id>_<tableName>", or
 * "<processor_id>" when tableName is empty, so existing deployments find
 * their tables.  Record keys become column names as they are.  Where a
 * name cannot be a PostgreSQL identifier as it is -- over 63 bytes (which
 * PostgreSQL would silently cut, making two names one), or empty -- it is
 * mapped to
 *
 *     <as much of the name as fits, cut on a character boundary>~<12 hex>
 *
 * where the hex digits are the first 48 bits of the SHA-256 of the whole
 * name.  A name that already ends in "~" and 12 hex digits is mapped the
 * same way, so no kept name can equal a mapped one: distinct names give
 * distinct identifiers (up to a 48-bit hash collision).  The mapping is
 * deterministic, so every worker and every restart agrees on it.  Names
 * are always quoted with quote_identifier when used in SQL.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/cryptohash.h"
#include "common/sha2.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/resowner.h"
#if PG_VERSION_NUM >= 160000
#include "varatt.h"				/* VARDATA_ANY: no longer in postgres.h */
#endif

#include "ident.h"

#define HASH_HEX	12
#define SUFFIX_LEN	(1 + HASH_HEX)	/* "~" + hex */

static bool
has_mapped_suffix(const char *name, size_t len)
{
	if (len < SUFFIX_LEN || name[len - SUFFIX_LEN] != '~')
		return false;
	for (size_t i = len - HASH_HEX; i < len; i++)
		if (!((name[i] >= '0' && name[i] <= '9') || (name[i] >= 'a' && name[i] <= 'f')))
			return false;
	return true;
}

/*
 * The hex of the SHA-256 of data.  The backend's cryptohash contexts are
 * tracked by the current resource owner; a worker between transactions has
 * none, so it gets one for the call.
 */
void
ism_sha256_hex(const char *data, size_t len, char *hex, size_t nhex)
{
	uint8		digest[PG_SHA256_DIGEST_LENGTH];
	ResourceOwner saved = CurrentResourceOwner;
	ResourceOwner owner = NULL;
	pg_cryptohash_ctx *ctx;
	bool		ok;

	if (CurrentResourceOwner == NULL)
		CurrentResourceOwner = owner = ResourceOwnerCreate(NULL, "ism_state identifier");
	ctx = pg_cryptohash_create(PG_SHA256);
	ok = ctx != NULL && pg_cryptohash_init(ctx) == 0 &&
		pg_cryptohash_update(ctx, (const uint8 *) data, len) == 0 &&
		pg_cryptohash_final(ctx, digest, sizeof(digest)) == 0;
	pg_cryptohash_free(ctx);
	if (owner)
	{
		ResourceOwnerRelease(owner, RESOURCE_RELEASE_BEFORE_LOCKS, true, false);
		ResourceOwnerRelease(owner, RESOURCE_RELEASE_LOCKS, true, false);
		ResourceOwnerRelease(owner, RESOURCE_RELEASE_AFTER_LOCKS, true, false);
		ResourceOwnerDelete(owner);
	}
	CurrentResourceOwner = saved;
	if (!ok)
		elog(ERROR, "could not compute SHA-256");
	for (size_t i = 0; i < nhex; i++)
		hex[i] = "0123456789abcdef"[(digest[i / 2] >> ((i % 2) ? 0 : 4)) & 0xF];
	hex[nhex] = '\0';
}

/* name as an identifier of at most NAMEDATALEN - 1 bytes, see above. */
char *
ism_identifier(const char *name, size_t len)
{
	char		hex[HASH_HEX + 1];
	int			keep;

	if (len > 0 && len < NAMEDATALEN && !has_mapped_suffix(name, len))
		return pnstrdup(name, len);

	ism_sha256_hex(name, len, hex, HASH_HEX);
	/* a prefix that leaves room for the suffix, cut between characters */
	keep = pg_encoding_mbcliplen(PG_UTF8, name, (int) len,
								 NAMEDATALEN - 1 - SUFFIX_LEN);
	return psprintf("%.*s~%s", keep, name, hex);
}

/*
 * The table of a state-tables processor, named as upstream
 * (alethic-ism-state-tables pkg/handler/database.go FormatTableName).
 */
char *
ism_table_name(const char *processor_id, const char *table_name)
{
	char	   *full = (table_name && table_name[0]) ?
		psprintf("%s_%s", processor_id, table_name) : pstrdup(processor_id);

	return ism_identifier(full, strlen(full));
}

PG_FUNCTION_INFO_V1(ism_sql_table_name);

/* ism_state.table_name(processor_id, table_name): where a processor writes */
Datum
ism_sql_table_name(PG_FUNCTION_ARGS)
{
	char	   *processor_id;
	char	   *table_name;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	processor_id = text_to_cstring(PG_GETARG_TEXT_PP(0));
	table_name = PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1));

	PG_RETURN_TEXT_P(cstring_to_text(ism_table_name(processor_id, table_name)));
}

PG_FUNCTION_INFO_V1(ism_sql_column_name);

/* ism_state.column_name(key): the column a record key is written to */
Datum
ism_sql_column_name(PG_FUNCTION_ARGS)
{
	text	   *key = PG_GETARG_TEXT_PP(0);

	PG_RETURN_TEXT_P(cstring_to_text(ism_identifier(VARDATA_ANY(key),
													VARSIZE_ANY_EXHDR(key))));
}
