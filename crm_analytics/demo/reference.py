"""Fixed reference data of the demo world: places, names, products, segments and channels.

Everything here is a constant; the generator modules draw from it. Chinese
place and person names come with their canonical English (pinyin) spelling and
traditional characters, so the dirty exports can spell one value several ways.
"""

from __future__ import annotations

import numpy as np

# (city, province, city in Chinese, province in Chinese, relative population weight)
CITIES: tuple[tuple[str, str, str, str, float], ...] = (
    ("Shanghai", "Shanghai", "上海", "上海", 9.0),
    ("Beijing", "Beijing", "北京", "北京", 8.5),
    ("Guangzhou", "Guangdong", "广州", "广东", 7.0),
    ("Shenzhen", "Guangdong", "深圳", "广东", 7.0),
    ("Dongguan", "Guangdong", "东莞", "广东", 3.0),
    ("Foshan", "Guangdong", "佛山", "广东", 3.0),
    ("Hangzhou", "Zhejiang", "杭州", "浙江", 5.0),
    ("Ningbo", "Zhejiang", "宁波", "浙江", 2.5),
    ("Wenzhou", "Zhejiang", "温州", "浙江", 2.0),
    ("Nanjing", "Jiangsu", "南京", "江苏", 4.0),
    ("Suzhou", "Jiangsu", "苏州", "江苏", 4.0),
    ("Wuxi", "Jiangsu", "无锡", "江苏", 2.0),
    ("Chengdu", "Sichuan", "成都", "四川", 6.0),
    ("Chongqing", "Chongqing", "重庆", "重庆", 6.0),
    ("Wuhan", "Hubei", "武汉", "湖北", 4.5),
    ("Xi'an", "Shaanxi", "西安", "陕西", 4.0),
    ("Tianjin", "Tianjin", "天津", "天津", 4.0),
    ("Changsha", "Hunan", "长沙", "湖南", 3.0),
    ("Zhengzhou", "Henan", "郑州", "河南", 3.5),
    ("Qingdao", "Shandong", "青岛", "山东", 2.5),
    ("Jinan", "Shandong", "济南", "山东", 2.5),
    ("Shenyang", "Liaoning", "沈阳", "辽宁", 2.5),
    ("Dalian", "Liaoning", "大连", "辽宁", 2.0),
    ("Harbin", "Heilongjiang", "哈尔滨", "黑龙江", 2.0),
    ("Kunming", "Yunnan", "昆明", "云南", 2.0),
    ("Xiamen", "Fujian", "厦门", "福建", 2.0),
    ("Fuzhou", "Fujian", "福州", "福建", 2.0),
    ("Hefei", "Anhui", "合肥", "安徽", 2.5),
    ("Nanning", "Guangxi", "南宁", "广西", 1.5),
    ("Shijiazhuang", "Hebei", "石家庄", "河北", 2.0),
    ("Changchun", "Jilin", "长春", "吉林", 1.5),
    ("Nanchang", "Jiangxi", "南昌", "江西", 1.5),
)
MUNICIPALITIES = frozenset({"Shanghai", "Beijing", "Chongqing", "Tianjin"})
AUTONOMOUS_REGIONS = {"Guangxi": "广西壮族自治区"}

# (simplified, traditional, pinyin)
SURNAMES: tuple[tuple[str, str, str], ...] = (
    ("王", "王", "Wang"), ("李", "李", "Li"), ("张", "張", "Zhang"), ("刘", "劉", "Liu"), ("陈", "陳", "Chen"),
    ("杨", "楊", "Yang"), ("黄", "黃", "Huang"), ("赵", "趙", "Zhao"), ("吴", "吳", "Wu"), ("周", "周", "Zhou"),
    ("徐", "徐", "Xu"), ("孙", "孫", "Sun"), ("马", "馬", "Ma"), ("朱", "朱", "Zhu"), ("胡", "胡", "Hu"),
    ("郭", "郭", "Guo"), ("何", "何", "He"), ("林", "林", "Lin"), ("罗", "羅", "Luo"), ("高", "高", "Gao"),
    ("郑", "鄭", "Zheng"), ("梁", "梁", "Liang"), ("谢", "謝", "Xie"), ("宋", "宋", "Song"), ("唐", "唐", "Tang"),
    ("许", "許", "Xu"), ("邓", "鄧", "Deng"), ("冯", "馮", "Feng"), ("韩", "韓", "Han"), ("曹", "曹", "Cao"),
    ("曾", "曾", "Zeng"), ("彭", "彭", "Peng"), ("萧", "蕭", "Xiao"), ("蔡", "蔡", "Cai"), ("潘", "潘", "Pan"),
    ("田", "田", "Tian"), ("董", "董", "Dong"), ("袁", "袁", "Yuan"), ("叶", "葉", "Ye"), ("蒋", "蔣", "Jiang"),
    ("杜", "杜", "Du"), ("苏", "蘇", "Su"), ("魏", "魏", "Wei"), ("程", "程", "Cheng"), ("吕", "呂", "Lv"),
    ("丁", "丁", "Ding"), ("沈", "沈", "Shen"), ("任", "任", "Ren"),
)
GIVEN_CHARACTERS: tuple[tuple[str, str, str], ...] = (
    ("伟", "偉", "wei"), ("芳", "芳", "fang"), ("娜", "娜", "na"), ("敏", "敏", "min"), ("静", "靜", "jing"),
    ("丽", "麗", "li"), ("强", "強", "qiang"), ("磊", "磊", "lei"), ("军", "軍", "jun"), ("洋", "洋", "yang"),
    ("勇", "勇", "yong"), ("艳", "艷", "yan"), ("杰", "傑", "jie"), ("娟", "娟", "juan"), ("涛", "濤", "tao"),
    ("明", "明", "ming"), ("超", "超", "chao"), ("秀", "秀", "xiu"), ("霞", "霞", "xia"), ("平", "平", "ping"),
    ("刚", "剛", "gang"), ("英", "英", "ying"), ("华", "華", "hua"), ("玉", "玉", "yu"), ("建", "建", "jian"),
    ("文", "文", "wen"), ("辉", "輝", "hui"), ("红", "紅", "hong"), ("鹏", "鵬", "peng"), ("婷", "婷", "ting"),
    ("雪", "雪", "xue"), ("琳", "琳", "lin"), ("欣", "欣", "xin"), ("浩", "浩", "hao"), ("宇", "宇", "yu"),
    ("晨", "晨", "chen"), ("俊", "俊", "jun"), ("佳", "佳", "jia"), ("梅", "梅", "mei"), ("兰", "蘭", "lan"),
    ("凤", "鳳", "feng"), ("龙", "龍", "long"), ("飞", "飛", "fei"), ("斌", "斌", "bin"), ("鑫", "鑫", "xin"),
    ("波", "波", "bo"), ("慧", "慧", "hui"), ("颖", "穎", "ying"), ("倩", "倩", "qian"), ("志", "志", "zhi"),
    ("国", "國", "guo"), ("海", "海", "hai"), ("东", "東", "dong"), ("春", "春", "chun"), ("晓", "曉", "xiao"),
    ("嘉", "嘉", "jia"), ("怡", "怡", "yi"), ("思", "思", "si"), ("涵", "涵", "han"), ("轩", "軒", "xuan"),
    ("睿", "睿", "rui"), ("博", "博", "bo"),
)
EMAIL_DOMAINS = ("qq.com", "163.com", "126.com", "gmail.com", "outlook.com", "sina.com", "foxmail.com", "hotmail.com")
EMAIL_DOMAIN_WEIGHTS = (0.34, 0.2, 0.1, 0.08, 0.08, 0.06, 0.08, 0.06)
MOBILE_PREFIXES = (130, 131, 132, 133, 135, 136, 137, 138, 139, 150, 151, 152, 155, 156, 157, 158, 159,
                   166, 176, 177, 178, 180, 181, 182, 183, 185, 186, 187, 188, 189, 198, 199)

# category id -> (Chinese name, typical list price in CNY, product kinds)
CATEGORIES: dict[str, tuple[str, float, tuple[str, ...]]] = {
    "electronics": ("数码电子", 380.0, ("蓝牙耳机", "充电宝", "智能手表", "平板电脑", "机械键盘", "无线鼠标", "数据线", "蓝牙音箱")),
    "home_appliances": ("家用电器", 420.0, ("电饭煲", "空气炸锅", "吸尘器", "电水壶", "加湿器", "电风扇", "微波炉", "净水器")),
    "apparel": ("服装", 220.0, ("T恤", "牛仔裤", "羽绒服", "连衣裙", "卫衣", "衬衫", "运动裤", "针织衫")),
    "shoes_bags": ("鞋包", 320.0, ("运动鞋", "帆布鞋", "双肩包", "皮鞋", "手提包", "拖鞋")),
    "beauty": ("美妆个护", 210.0, ("面霜", "精华液", "口红", "防晒霜", "洗面奶", "面膜", "香水")),
    "mother_baby": ("母婴", 160.0, ("纸尿裤", "奶粉", "婴儿湿巾", "奶瓶", "婴儿推车", "儿童玩具")),
    "food": ("食品饮料", 70.0, ("坚果礼盒", "绿茶", "咖啡豆", "牛奶", "零食大礼包", "月饼礼盒", "大米")),
    "home_living": ("家居日用", 110.0, ("四件套", "乳胶枕", "收纳箱", "保温杯", "毛巾", "餐具套装")),
    "sports_outdoor": ("运动户外", 260.0, ("瑜伽垫", "跑步机", "哑铃", "帐篷", "登山包", "骑行头盔")),
    "books": ("图书", 55.0, ("小说", "儿童绘本", "编程教程", "历史读物", "英语词典")),
    "pet": ("宠物用品", 95.0, ("猫粮", "狗粮", "猫砂", "宠物玩具", "宠物窝")),
    "health": ("医药保健", 150.0, ("维生素", "鱼油", "蛋白粉", "血压计", "口罩")),
}
CATEGORY_NAMES = tuple(CATEGORIES)
BRANDS = ("悦享", "臻品", "优选", "极光", "云朵", "山川", "初心", "星河")
PRODUCT_VARIANTS = ("", " 标准版", " 升级款", " 旗舰版", " 礼盒装", " 2件装", " 大号", " 轻薄款")
PRODUCTS_PER_CATEGORY = 36

SALES_CHANNELS = ("web", "app", "mini_program", "store")  # where an order is placed
WEB_PLATFORMS = ("web", "app", "mini_program")
ACQUISITION_CHANNELS = ("organic_search", "paid_search", "social", "referral", "store", "call_centre")
WEB_ACQUISITION = ("organic_search", "paid_search", "social", "referral")
# Channel quality: multiplier on the purchase rate and on the odds of dropping out after a purchase.
ACQUISITION_RATE_MULTIPLIER = np.array([1.0, 0.9, 0.7, 1.2, 1.0, 0.85])
ACQUISITION_DROPOUT_ODDS = np.array([1.0, 1.25, 1.7, 0.65, 0.85, 1.15])

SEGMENTS: tuple[str, ...] = ("value_seekers", "premium_loyalists", "tech_enthusiasts", "family_shoppers", "store_regulars")
SEGMENT_SHARES = np.array([0.28, 0.16, 0.16, 0.22, 0.18])


def _category_mix(weights: dict[str, float]) -> np.ndarray:
    mix = np.full(len(CATEGORY_NAMES), 0.012)
    for name, w in weights.items():
        mix[CATEGORY_NAMES.index(name)] += w
    return mix / mix.sum()


# Per segment: category mix, share of discounted orders, price tier (0 cheap .. 1 premium: which products
# of a category are bought, hence the spend level), purchase-rate multiplier, order-channel preference (web,
# app, mini_program, store), support-contact multiplier, acquisition-channel mix (in ACQUISITION_CHANNELS
# order), extra units per line (Poisson mean) and the mean of the latent satisfaction.
SEGMENT_PROFILES: dict[str, dict] = {
    "value_seekers": dict(
        categories=_category_mix({"food": 0.35, "pet": 0.25, "home_living": 0.3}),
        discount_share=0.75, price_tier=0.15, rate=1.35, channels=(0.08, 0.22, 0.65, 0.05), support=1.0,
        acquisition=(0.25, 0.2, 0.35, 0.1, 0.05, 0.05), extra_quantity=0.9, satisfaction=-0.1),
    "premium_loyalists": dict(
        categories=_category_mix({"beauty": 0.45, "apparel": 0.25, "shoes_bags": 0.2}),
        discount_share=0.05, price_tier=0.85, rate=1.1, channels=(0.1, 0.72, 0.03, 0.15), support=0.6,
        acquisition=(0.3, 0.15, 0.15, 0.25, 0.1, 0.05), extra_quantity=0.1, satisfaction=0.5),
    "tech_enthusiasts": dict(
        categories=_category_mix({"electronics": 0.55, "home_appliances": 0.25, "books": 0.12}),
        discount_share=0.3, price_tier=0.8, rate=0.55, channels=(0.8, 0.12, 0.03, 0.05), support=1.8,
        acquisition=(0.4, 0.35, 0.1, 0.1, 0.03, 0.02), extra_quantity=0.05, satisfaction=0.0),
    "family_shoppers": dict(
        categories=_category_mix({"mother_baby": 0.5, "health": 0.2, "books": 0.15}),
        discount_share=0.4, price_tier=0.45, rate=1.0, channels=(0.05, 0.15, 0.25, 0.55), support=1.1,
        acquisition=(0.2, 0.2, 0.2, 0.15, 0.15, 0.1), extra_quantity=0.6, satisfaction=0.0),
    "store_regulars": dict(
        categories=_category_mix({"sports_outdoor": 0.45, "apparel": 0.15, "home_appliances": 0.1, "shoes_bags": 0.15}),
        discount_share=0.2, price_tier=0.55, rate=0.8, channels=(0.02, 0.03, 0.02, 0.93), support=0.7,
        acquisition=(0.05, 0.03, 0.02, 0.05, 0.75, 0.1), extra_quantity=0.3, satisfaction=0.2),
}

# Hour-of-day weights (local time) of orders per sales channel.
HOUR_WEIGHTS: dict[str, np.ndarray] = {
    "web": np.array([2, 1, 1, 0.5, 0.5, 0.5, 1, 2, 4, 6, 7, 7, 8, 7, 6, 6, 6, 6, 7, 9, 11, 12, 10, 5], float),
    "app": np.array([5, 3, 1.5, 1, 0.5, 0.5, 1, 3, 4, 4, 4, 5, 7, 6, 4, 4, 4, 5, 6, 8, 10, 12, 13, 10], float),
    "mini_program": np.array([2, 1, 0.5, 0.5, 0.5, 0.5, 1, 3, 5, 5, 5, 8, 12, 10, 5, 4, 4, 6, 9, 11, 10, 8, 6, 3], float),
    "store": np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 6, 7, 7, 8, 9, 9, 8, 8, 9, 8, 5, 0, 0], float),
}

GENDERS = ("F", "M")

# Spring Festival (Chinese New Year) dates: sales dip around them.
SPRING_FESTIVALS = (
    "2018-02-16", "2019-02-05", "2020-01-25", "2021-02-12", "2022-02-01", "2023-01-22", "2024-02-10",
    "2025-01-29", "2026-02-17", "2027-02-06", "2028-01-26", "2029-02-13", "2030-02-03",
)

SURVEY_COMMENTS: dict[str, tuple[str, ...]] = {
    "detractor": ("物流太慢", "质量一般，不会再买了", "客服态度差", "delivery was late", "product broke after a week",
                  "退款太麻烦", "too expensive for the quality", "包装破损"),
    "passive": ("还可以", "价格有点贵", "ok", "delivery could be faster", "一般般", "fine"),
    "promoter": ("great service", "非常满意", "包装很好", "will buy again", "物流很快", "质量很好，推荐", "love it"),
}
