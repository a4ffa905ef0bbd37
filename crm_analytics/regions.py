"""The canonical list of Chinese provinces and major cities, and look-ups onto it.

Canonical names are the English ones used in the warehouse (``Guangdong``,
``Shenzhen``). Look-ups accept the Chinese name with or without its
administrative suffix (``广东省``, ``广东``, ``深圳市``), the English name in
any case, with or without ``Province`` / ``City``, and the pinyin spelling.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

import pandas as pd

# (canonical English name, Chinese name without suffix)
PROVINCES: tuple[tuple[str, str], ...] = (
    ("Beijing", "北京"), ("Tianjin", "天津"), ("Hebei", "河北"), ("Shanxi", "山西"), ("Inner Mongolia", "内蒙古"),
    ("Liaoning", "辽宁"), ("Jilin", "吉林"), ("Heilongjiang", "黑龙江"), ("Shanghai", "上海"), ("Jiangsu", "江苏"),
    ("Zhejiang", "浙江"), ("Anhui", "安徽"), ("Fujian", "福建"), ("Jiangxi", "江西"), ("Shandong", "山东"),
    ("Henan", "河南"), ("Hubei", "湖北"), ("Hunan", "湖南"), ("Guangdong", "广东"), ("Guangxi", "广西"),
    ("Hainan", "海南"), ("Chongqing", "重庆"), ("Sichuan", "四川"), ("Guizhou", "贵州"), ("Yunnan", "云南"),
    ("Tibet", "西藏"), ("Shaanxi", "陕西"), ("Gansu", "甘肃"), ("Qinghai", "青海"), ("Ningxia", "宁夏"),
    ("Xinjiang", "新疆"), ("Hong Kong", "香港"), ("Macau", "澳门"), ("Taiwan", "台湾"),
)

# (canonical English name, Chinese name without suffix, province)
CITIES: tuple[tuple[str, str, str], ...] = (
    ("Beijing", "北京", "Beijing"), ("Shanghai", "上海", "Shanghai"), ("Tianjin", "天津", "Tianjin"),
    ("Chongqing", "重庆", "Chongqing"), ("Guangzhou", "广州", "Guangdong"), ("Shenzhen", "深圳", "Guangdong"),
    ("Dongguan", "东莞", "Guangdong"), ("Foshan", "佛山", "Guangdong"), ("Zhuhai", "珠海", "Guangdong"),
    ("Shantou", "汕头", "Guangdong"), ("Huizhou", "惠州", "Guangdong"), ("Zhongshan", "中山", "Guangdong"),
    ("Hangzhou", "杭州", "Zhejiang"), ("Ningbo", "宁波", "Zhejiang"), ("Wenzhou", "温州", "Zhejiang"),
    ("Shaoxing", "绍兴", "Zhejiang"), ("Jiaxing", "嘉兴", "Zhejiang"), ("Jinhua", "金华", "Zhejiang"),
    ("Nanjing", "南京", "Jiangsu"), ("Suzhou", "苏州", "Jiangsu"), ("Wuxi", "无锡", "Jiangsu"),
    ("Changzhou", "常州", "Jiangsu"), ("Nantong", "南通", "Jiangsu"), ("Xuzhou", "徐州", "Jiangsu"),
    ("Yangzhou", "扬州", "Jiangsu"), ("Chengdu", "成都", "Sichuan"), ("Mianyang", "绵阳", "Sichuan"),
    ("Wuhan", "武汉", "Hubei"), ("Yichang", "宜昌", "Hubei"), ("Xiangyang", "襄阳", "Hubei"),
    ("Changsha", "长沙", "Hunan"), ("Zhuzhou", "株洲", "Hunan"), ("Xi'an", "西安", "Shaanxi"),
    ("Zhengzhou", "郑州", "Henan"), ("Luoyang", "洛阳", "Henan"), ("Jinan", "济南", "Shandong"),
    ("Qingdao", "青岛", "Shandong"), ("Yantai", "烟台", "Shandong"), ("Weifang", "潍坊", "Shandong"),
    ("Linyi", "临沂", "Shandong"), ("Hefei", "合肥", "Anhui"), ("Wuhu", "芜湖", "Anhui"),
    ("Fuzhou", "福州", "Fujian"), ("Xiamen", "厦门", "Fujian"), ("Quanzhou", "泉州", "Fujian"),
    ("Nanchang", "南昌", "Jiangxi"), ("Ganzhou", "赣州", "Jiangxi"), ("Shenyang", "沈阳", "Liaoning"),
    ("Dalian", "大连", "Liaoning"), ("Changchun", "长春", "Jilin"), ("Harbin", "哈尔滨", "Heilongjiang"),
    ("Daqing", "大庆", "Heilongjiang"), ("Shijiazhuang", "石家庄", "Hebei"), ("Tangshan", "唐山", "Hebei"),
    ("Baoding", "保定", "Hebei"), ("Taiyuan", "太原", "Shanxi"), ("Datong", "大同", "Shanxi"),
    ("Hohhot", "呼和浩特", "Inner Mongolia"), ("Baotou", "包头", "Inner Mongolia"), ("Nanning", "南宁", "Guangxi"),
    ("Guilin", "桂林", "Guangxi"), ("Liuzhou", "柳州", "Guangxi"), ("Haikou", "海口", "Hainan"),
    ("Sanya", "三亚", "Hainan"), ("Guiyang", "贵阳", "Guizhou"), ("Zunyi", "遵义", "Guizhou"),
    ("Kunming", "昆明", "Yunnan"), ("Dali", "大理", "Yunnan"), ("Lhasa", "拉萨", "Tibet"),
    ("Lanzhou", "兰州", "Gansu"), ("Xining", "西宁", "Qinghai"), ("Yinchuan", "银川", "Ningxia"),
    ("Urumqi", "乌鲁木齐", "Xinjiang"), ("Hong Kong", "香港", "Hong Kong"), ("Macau", "澳门", "Macau"),
    ("Taipei", "台北", "Taiwan"),
)

_PROVINCE_SUFFIXES = ("壮族自治区", "回族自治区", "维吾尔自治区", "特别行政区", "自治区", "省", "市")
_CITY_SUFFIXES = ("市", "地区", "自治州", "區", "区")
_LATIN_SUFFIXES = re.compile(r"\b(province|city|shi|sheng|municipality|sar|autonomous region|prefecture)\b")
_ALIASES = {"xizang": "Tibet", "nei mongol": "Inner Mongolia", "neimenggu": "Inner Mongolia", "macao": "Macau",
            "xian": "Xi'an", "wulumuqi": "Urumqi", "huhehaote": "Hohhot", "xianggang": "Hong Kong", "aomen": "Macau"}


def _latin_key(text: str) -> str:
    low = _LATIN_SUFFIXES.sub(" ", text.lower())
    return re.sub(r"[^a-z]", "", low)


def _strip_suffix(text: str, suffixes: tuple[str, ...]) -> str:
    for suffix in suffixes:
        if text.endswith(suffix) and len(text) > len(suffix) + 1:
            return text[: -len(suffix)]
    return text


def _index(pairs: list[tuple[str, str]]) -> dict[str, str]:
    index: dict[str, str] = {}
    for english, chinese in pairs:
        index[chinese] = english
        index[_latin_key(english)] = english
    index.update({_latin_key(alias): name for alias, name in _ALIASES.items() if name in {e for e, _ in pairs}})
    return index


_PROVINCE_INDEX = _index([(e, c) for e, c in PROVINCES])
_CITY_INDEX = _index([(e, c) for e, c, _ in CITIES])


# Traditional spellings whose toneless pinyin is ambiguous (陕西 Shaanxi and 山西 Shanxi are both "shanxi").
_TRADITIONAL = {"陝西": "陕西", "山西": "山西"}


def _pinyin_key(text: str) -> str:
    """Toneless pinyin of Chinese text (simplified or traditional), for spellings not on the list."""
    from pypinyin import Style, lazy_pinyin

    return "".join(lazy_pinyin(text, style=Style.NORMAL, errors="ignore"))


def _lookup(text: str, index: dict[str, str], suffixes: tuple[str, ...]) -> str | None:
    clean = unicodedata.normalize("NFKC", text).strip()
    if not clean:
        return None
    stem = _strip_suffix(clean, suffixes)
    stem = _TRADITIONAL.get(stem, stem)
    found = index.get(stem) or index.get(_latin_key(clean))
    if found is None and re.search(r"[\u3400-\u9fff]", stem):
        found = index.get(_pinyin_key(stem))
    return found


@lru_cache(maxsize=10_000)
def lookup_province(text: str) -> str | None:
    """Return the canonical English province name for ``text``, or ``None`` when it is not a province."""
    return _lookup(text, _PROVINCE_INDEX, _PROVINCE_SUFFIXES)


@lru_cache(maxsize=10_000)
def lookup_city(text: str) -> str | None:
    """Return the canonical English city name for ``text``, or ``None`` when it is not on the list."""
    return _lookup(text, _CITY_INDEX, _CITY_SUFFIXES)


def province_of(city: str) -> str | None:
    """Return the province of a canonical city name, or ``None``."""
    for english, _, province in CITIES:
        if english == city:
            return province
    return None


def region_table() -> pd.DataFrame:
    """Return the canonical city list: ``city``, ``city_zh``, ``province``, ``province_zh`` (strings)."""
    province_zh = dict(PROVINCES)
    rows = [(e, c, p, province_zh[p]) for e, c, p in CITIES]
    return pd.DataFrame(rows, columns=["city", "city_zh", "province", "province_zh"]).astype("string")
