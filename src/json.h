/*-------------------------------------------------------------------------
 *
 * json.h
 *	  JSON messages as sent: a parse tree that keeps every value's text,
 *	  and compact printing from it (json.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ISM_JSON_H
#define ISM_JSON_H

#include "lib/stringinfo.h"

/* containers nested deeper than this are refused (as cJSON did, and Python) */
#define ISM_JSON_MAX_DEPTH	1000

typedef enum IsmJsonType
{
	ISM_JSON_NULL,
	ISM_JSON_FALSE,
	ISM_JSON_TRUE,
	ISM_JSON_NUMBER,
	ISM_JSON_STRING,
	ISM_JSON_ARRAY,
	ISM_JSON_OBJECT
} IsmJsonType;

/* flags */
#define ISM_JSON_NUL		0x01	/* a string or name here, or within, decodes to one holding NUL */
#define ISM_JSON_KEY_NUL	0x02	/* this member's name holds NUL */
#define ISM_JSON_REPRINT	0x04	/* text is not this value compactly (white space, a repeated key) */

typedef struct IsmJson IsmJson;

/*
 * A value.  text is its JSON text as sent: a number's literal, a string's
 * token with its escapes, a container from bracket to bracket.  A string
 * is also decoded (str: str_len bytes, which may hold NUL, and a NUL
 * after them).  An object's members are distinct: of a name given several
 * times the last value counts, at the first one's place (as Python's
 * json.loads keeps it), and the object is marked ISM_JSON_REPRINT.
 */
struct IsmJson
{
	IsmJsonType type;
	int			flags;
	int			len;			/* of text */
	int			str_len;		/* STRING: of str */
	int			count;			/* ARRAY, OBJECT: members */
	int			key_len;		/* member of an object: of key */
	int			key_text_len;	/* member of an object: of key_text */
	int			order;			/* member of an object: where its value was in the object */
	const char *text;
	const char *str;
	const char *key;			/* member of an object: its name, decoded */
	const char *key_text;		/* member of an object: its name's token as sent */
	IsmJson    *child;			/* ARRAY, OBJECT: the first member */
	IsmJson    *next;			/* the next member of its container */
};

#define ism_json_is(v, t) ((v) != NULL && (v)->type == (t))
#define ism_json_foreach(m, container) \
	for ((m) = (container) ? (container)->child : NULL; (m) != NULL; (m) = (m)->next)

extern IsmJson *ism_json_parse(const char *text, int len, char **error);
extern IsmJson *ism_json_get(const IsmJson *object, const char *key);
extern IsmJson *ism_json_get_fold(const IsmJson *object, const char *key);
extern const char *ism_json_cstring(const IsmJson *v);
extern bool ism_json_whole_int(const IsmJson *v, int *out);
extern bool ism_json_truthy(const IsmJson *v);

extern void ism_json_append(StringInfo buf, const IsmJson *v);
extern char *ism_json_print(const IsmJson *v);
extern void ism_json_append_string(StringInfo buf, const char *s, int len);
extern void ism_json_append_cstring_or_null(StringInfo buf, const char *s);

extern IsmJson *ism_json_make_string(const char *s);
extern IsmJson *ism_json_make_object(void);
extern void ism_json_set(IsmJson *object, const char *key, const IsmJson *value);

#endif							/* ISM_JSON_H */
