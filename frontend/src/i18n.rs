//! Korean first, English on the toggle. Every message is a field of `Text`, so a language that
//! lacks one does not compile.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Ko,
    En,
}

impl Lang {
    pub fn other(self) -> Self {
        match self {
            Lang::Ko => Lang::En,
            Lang::En => Lang::Ko,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Lang::Ko => "ko",
            Lang::En => "en",
        }
    }

    /// The BCP 47 locale for the browser's `Intl` formatting.
    pub fn locale(self) -> &'static str {
        match self {
            Lang::Ko => "ko-KR",
            Lang::En => "en-US",
        }
    }

    pub fn from_code(code: &str) -> Self {
        if code == "en" { Lang::En } else { Lang::Ko }
    }

    pub fn text(self) -> &'static Text {
        match self {
            Lang::Ko => &KO,
            Lang::En => &EN,
        }
    }
}

pub struct Text {
    /// The toggle's label: the *other* language's name, in that language.
    pub toggle: &'static str,
    pub home_title: &'static str,
    pub home_empty: &'static str,
    pub open_now: &'static str,
    pub upcoming: &'static str,
    pub loading: &'static str,
    pub not_found: &'static str,
    pub discount: fn(u64, &str) -> String,
    pub remaining: fn(u64, u32) -> String,
    pub opens_in: &'static str,
    pub opened: &'static str,
    pub claim: &'static str,
    /// The button's label once there is nothing to click for.
    pub claim_sold_out: &'static str,
    pub claim_closed: &'static str,
    pub claiming: &'static str,
    pub solving: fn(u32) -> String,
    pub sign_in_name: &'static str,
    pub sign_in: &'static str,
    pub email: &'static str,
    pub password: &'static str,
    pub sign_up: &'static str,
    pub code_sent: &'static str,
    pub confirm_code: &'static str,
    pub confirm: &'static str,
    pub signed_in_as: fn(&str) -> String,
    pub sign_in_first: &'static str,
    pub wait_for_open: &'static str,
    pub ready: &'static str,
    pub issued: &'static str,
    pub already_issued: &'static str,
    pub sold_out: &'static str,
    pub not_open: &'static str,
    pub closed: &'static str,
    pub busy_retrying: fn(u32) -> String,
    pub offline_retrying: fn(u32) -> String,
    pub failed: fn(&str) -> String,
    pub copy: &'static str,
    pub copied: &'static str,
    pub your_coupon: &'static str,
    pub expires: fn(&str) -> String,
}

static KO: Text = Text {
    toggle: "English",
    home_title: "선착순 쿠폰 이벤트",
    home_empty: "진행 중이거나 예정된 이벤트가 없습니다.",
    open_now: "진행 중",
    upcoming: "오픈 예정",
    loading: "불러오는 중…",
    not_found: "이벤트를 찾을 수 없습니다.",
    discount: |amount, currency| match currency {
        "KRW" => format!("{}원 할인", grouped(amount)),
        _ => format!("{} {currency} 할인", grouped(amount)),
    },
    remaining: |left, total| format!("남은 수량 {left} / {total}"),
    opens_in: "오픈까지",
    opened: "진행 중",
    claim: "쿠폰 받기",
    claim_sold_out: "모두 소진되어 받을 수 없습니다",
    claim_closed: "종료된 이벤트입니다",
    claiming: "요청 중…",
    solving: |p| format!("참여 티켓 준비 중… {p}%"),
    sign_in_name: "이름 (아이디)",
    sign_in: "로그인",
    email: "이메일",
    password: "비밀번호",
    sign_up: "회원가입",
    code_sent: "이메일로 받은 인증 코드를 입력하세요.",
    confirm_code: "인증 코드",
    confirm: "인증",
    signed_in_as: |name| format!("{name} 님으로 로그인됨"),
    sign_in_first: "쿠폰을 받으려면 먼저 로그인하세요.",
    wait_for_open: "오픈 시각이 되면 버튼이 활성화됩니다.",
    ready: "지금 쿠폰을 받을 수 있습니다.",
    issued: "쿠폰이 발급되었습니다!",
    already_issued: "이미 발급받은 쿠폰입니다.",
    sold_out: "쿠폰이 모두 소진되었습니다.",
    not_open: "아직 오픈 전입니다.",
    closed: "이벤트가 종료되었습니다.",
    busy_retrying: |s| format!("접속자가 많습니다. {s}초 후 자동으로 다시 시도합니다…"),
    offline_retrying: |s| format!("네트워크 오류입니다. {s}초 후 자동으로 다시 시도합니다…"),
    failed: |m| format!("요청이 실패했습니다: {m}"),
    copy: "복사",
    copied: "복사되었습니다.",
    your_coupon: "내 쿠폰",
    expires: |d| format!("유효기간: {d}까지"),
};

static EN: Text = Text {
    toggle: "한국어",
    home_title: "First-come coupon events",
    home_empty: "No events are open or coming up.",
    open_now: "Open now",
    upcoming: "Coming up",
    loading: "Loading…",
    not_found: "No such event.",
    discount: |amount, currency| match currency {
        "KRW" => format!("₩{} off", grouped(amount)),
        _ => format!("{} {currency} off", grouped(amount)),
    },
    remaining: |left, total| format!("{left} of {total} left"),
    opens_in: "Opens in",
    opened: "Open now",
    claim: "Get coupon",
    claim_sold_out: "Sold out: nothing left to get",
    claim_closed: "This event has ended",
    claiming: "Requesting…",
    solving: |p| format!("Preparing your ticket… {p}%"),
    sign_in_name: "Name (user id)",
    sign_in: "Sign in",
    email: "Email",
    password: "Password",
    sign_up: "Create account",
    code_sent: "Enter the code we emailed you.",
    confirm_code: "Code",
    confirm: "Confirm",
    signed_in_as: |name| format!("Signed in as {name}"),
    sign_in_first: "Sign in to get a coupon.",
    wait_for_open: "The button unlocks at the opening time.",
    ready: "You can get your coupon now.",
    issued: "Your coupon has been issued!",
    already_issued: "You already have this coupon.",
    sold_out: "Sold out: every coupon has been issued.",
    not_open: "Not open yet.",
    closed: "This event has ended.",
    busy_retrying: |s| format!("The service is busy. Retrying by itself in {s} s…"),
    offline_retrying: |s| format!("Network error. Retrying by itself in {s} s…"),
    failed: |m| format!("The request failed: {m}"),
    copy: "Copy",
    copied: "Copied.",
    your_coupon: "Your coupon",
    expires: |d| format!("Valid until {d}"),
};

/// `n` with its thousands grouped by commas (both languages write 10,000).
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

/// An instant as the visitor reads it: their time zone, their language (`2026년 12월 8일
/// 21:12`, `December 8, 2026 at 21:12`), from the browser's own `Intl`.
#[cfg(target_arch = "wasm32")]
pub fn local_datetime(lang: Lang, at: time::OffsetDateTime) -> String {
    use wasm_bindgen::JsValue;
    let options = js_sys::Object::new();
    for (k, v) in [
        ("year", "numeric"),
        ("month", "long"),
        ("day", "numeric"),
        ("hour", "2-digit"),
        ("minute", "2-digit"),
        ("hourCycle", "h23"),
    ] {
        let _ = js_sys::Reflect::set(&options, &JsValue::from_str(k), &JsValue::from_str(v));
    }
    let locales = js_sys::Array::of1(&JsValue::from_str(lang.locale()));
    let format = js_sys::Intl::DateTimeFormat::new(&locales, &options).format();
    let date = js_sys::Date::new(&JsValue::from_f64(crate::api::millis(at)));
    format
        .call1(&JsValue::NULL, &date)
        .ok()
        .and_then(|s| s.as_string())
        .unwrap_or_else(|| firstcome_wire::datetime::format(at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_grouped_and_won_is_written_in_korean() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(10_000), "10,000");
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!((Lang::Ko.text().discount)(10_000, "KRW"), "10,000원 할인");
        assert_eq!((Lang::En.text().discount)(10_000, "KRW"), "₩10,000 off");
        assert_eq!((Lang::En.text().discount)(5, "USD"), "5 USD off");
    }

    #[test]
    fn both_languages_say_sold_out_and_toggle_to_each_other() {
        assert!(Lang::Ko.text().sold_out.contains("소진"));
        assert!(Lang::En.text().sold_out.to_lowercase().contains("sold out"));
        assert_eq!(Lang::Ko.other(), Lang::En);
        assert_eq!(Lang::from_code(Lang::En.code()), Lang::En);
        assert_eq!(Lang::from_code("fr"), Lang::Ko, "Korean first");
        assert_eq!((Lang::Ko.text().remaining)(0, 5), "남은 수량 0 / 5");
    }
}
