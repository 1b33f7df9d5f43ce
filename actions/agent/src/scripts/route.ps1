function Read-Route {
    $site = Get-CsSite -Identity $P.site
    if ($null -eq $site) { throw "Get-CsSite found no site with the identity given" }
    foreach ($name in 'XmppFederationRoute', 'XmppExternalFederationRoute') {
        if ($site.PSObject.Properties[$name]) {
            $value = $site.$name
            if ($null -eq $value -or "$value" -eq '') { return $null }
            return [string]$value
        }
    }
    return $null
}
