/* log.h - leveled logging to stderr, one line per event.  The level is the
 * only process-wide setting besides the signal flag: every module may log,
 * but parsers never do (they return errors; the edge logs them). */
#ifndef KV_LOG_H
#define KV_LOG_H

enum log_level { LOG_ERROR = 0, LOG_WARNING = 1, LOG_INFO = 2, LOG_DEBUG = 3 };

extern enum log_level log_threshold;
void log_msg(enum log_level lv, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int log_parse_level(const char *s, enum log_level *out);

#define LOGE(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define LOGW(...) log_msg(LOG_WARNING, __VA_ARGS__)
#define LOGI(...) do { if (log_threshold >= LOG_INFO) log_msg(LOG_INFO, __VA_ARGS__); } while (0)
#define LOGD(...) do { if (log_threshold >= LOG_DEBUG) log_msg(LOG_DEBUG, __VA_ARGS__); } while (0)

#endif
