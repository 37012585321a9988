"""The console's words in English and Chinese, and which language a request gets: an explicit
choice (``?lang=``, kept in a cookie), else the browser's Accept-Language, else notify.language.
"""

from __future__ import annotations

from collections.abc import Callable

LANGUAGES = ("en", "zh")
LANG_COOKIE = "cm_lang"

_ZH: dict[str, str] = {
    "Overview": "总览",
    "Alerts": "告警",
    "Account": "账户",
    "Instances": "实例",
    "Log out": "退出",
    "Log in": "登录",
    "Token": "令牌",
    "Creator": "达人",
    "Variant": "口径",
    "Last point": "最新数据",
    "Change 7d": "7 日变化",
    "Trend": "趋势",
    "Fetch": "抓取",
    "Open alerts": "未解决告警",
    "Filter": "筛选",
    "Name or user id": "名称或用户 ID",
    "Tag": "标签",
    "Metric": "指标",
    "Sort": "排序",
    "By name": "按名称",
    "Biggest rise": "涨幅最大",
    "Biggest fall": "跌幅最大",
    "Most followers gained": "粉丝增长最多",
    "Most followers lost": "粉丝流失最多",
    "Latest notes": "最新笔记",
    "Published": "发布日期",
    "Title": "标题",
    "Reads": "阅读",
    "Likes": "点赞",
    "Collects": "收藏",
    "Reads gained": "阅读增长",
    "First seen": "首次发现",
    "video": "视频",
    "ad": "广告",
    "Previous": "上一页",
    "Next": "下一页",
    "Page": "页",
    "of": "/",
    "series": "条序列",
    "History": "历史",
    "Fetch log": "抓取日志",
    "Silences": "静默",
    "When": "时间",
    "HTTP": "HTTP",
    "Code": "代码",
    "Billed": "计费",
    "Latency": "延迟",
    "Points": "数据点",
    "Error": "错误",
    "Rule": "规则",
    "Severity": "级别",
    "State": "状态",
    "Summary": "摘要",
    "Data day": "数据日",
    "Fired": "触发于",
    "Resolved": "解决于",
    "Acknowledged": "已确认",
    "Acknowledge": "确认",
    "Open": "未解决",
    "All": "全部",
    "Silence": "静默",
    "For": "时长",
    "Reason": "原因",
    "Until": "直到",
    "Remove": "删除",
    "Add silence": "添加静默",
    "Calls today": "今日调用",
    "Billed today": "今日计费",
    "Use per minute": "每分钟用量",
    "Paused": "已暂停",
    "Running": "运行中",
    "Next probe": "下次探测",
    "Balance": "余额",
    "Read": "读取于",
    "Not read yet": "尚未读取",
    "Price per call": "每次调用价格",
    "derived from the readings": "由余额读数推算",
    "Days left": "剩余天数",
    "at the plan": "按当前计划",
    "calls/day": "次/天",
    "Calls per day by code": "每日调用（按代码）",
    "Day": "日期",
    "Calls": "调用",
    "Host": "主机",
    "Started": "启动于",
    "Heartbeat": "心跳",
    "Version": "版本",
    "Alive": "存活",
    "No data": "暂无数据",
    "Instances are listed on PostgreSQL; this database is SQLite (one daemon).": (
        "实例列表仅用于 PostgreSQL；当前为 SQLite（单进程）。"
    ),
    "Too many failed logins; try again later.": "登录失败次数过多，请稍后再试。",
    "Wrong token.": "令牌错误。",
    "read-only": "只读",
    "ok": "正常",
    "failing": "失败中",
    "broken": "已停用",
    "never": "未抓取",
    "firing": "触发中",
    "pending": "待定",
    "resolved": "已解决",
    "by": "由",
    "Not found": "未找到",
    "Apply": "应用",
    "creators": "达人",
    "Calls are paused": "调用已暂停",
    "Calls resume": "恢复调用",
    "code": "代码",
    "Leases": "租约",
    "account": "账户",
    "user id / name / account": "用户 ID / 名称 / account",
}


def negotiate(explicit: str | None, accept_language: str, default: str) -> str:
    """The language for one request (see the module docstring)."""
    if explicit in LANGUAGES:
        return explicit
    best, best_q = None, 0.0
    for part in accept_language.split(","):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        primary = tag.strip().lower().split("-")[0]
        if primary in LANGUAGES and q > best_q:
            best, best_q = primary, q
    return best or (default if default in LANGUAGES else "en")


def translator(language: str) -> Callable[[str], str]:
    """``_("Overview")`` in the given language (English is the key itself)."""
    if language != "zh":
        return lambda text: text
    return lambda text: _ZH.get(text, text)
